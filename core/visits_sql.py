"""The visit statements the engine, the API and the CLI share (constants, no I/O).

Device check-ins become visits by ``IMPORT_CHECKINS``: an access-class device (the
tag at the resident's door) publishes the event ``visit_checkin`` with
``{"worker": ..., "resident": ..., "outcome"?: ..., "notes"?: ...}``; the pipeline
stores it in ``device_events`` like any event, and this statement copies new ones
into ``visits``. Its natural key (device, device time) makes running it twice, or
from two processes at once, harmless. A check-in naming no resident of the
device's community stays a device event only.
"""

from __future__ import annotations

__all__ = ["CHECKIN_EVENT", "IMPORT_CHECKINS", "IMPORT_OVERLAP"]

CHECKIN_EVENT = "visit_checkin"
# Events commit in batches whose received_at can interleave: re-read this far back.
IMPORT_OVERLAP = "10 minutes"

IMPORT_CHECKINS = f"""
WITH since AS (
    SELECT coalesce(max(source_received_at) - interval '{IMPORT_OVERLAP}', '-infinity') AS t
      FROM visits WHERE source = 'device'
), new AS (
    SELECT d.community_id, r.id AS resident_id, left(e.data->>'worker', 64) AS worker,
           e.ts, e.device_id, e.received_at, left(coalesce(e.data->>'notes', ''), 2000) AS notes,
           CASE WHEN e.data->>'outcome' IN ('well', 'needs_follow_up', 'not_at_home')
                THEN e.data->>'outcome' ELSE 'well' END AS outcome,
           c.time_zone
      FROM device_events AS e
      JOIN devices AS d ON d.id = e.device_id
      JOIN residents AS r ON r.id = e.data->>'resident' AND r.community_id = d.community_id
      JOIN communities AS c ON c.id = d.community_id
     WHERE e.event = '{CHECKIN_EVENT}' AND e.received_at >= (SELECT t FROM since)
       AND coalesce(e.data->>'worker', '') <> ''
)
INSERT INTO visits (community_id, resident_id, worker, started_at, outcome, notes, source,
                    source_device, source_ts, source_received_at, follow_up_due)
SELECT community_id, resident_id, worker, ts, outcome, notes, 'device', device_id, ts,
       received_at,
       CASE WHEN outcome = 'needs_follow_up'
            THEN (ts AT TIME ZONE time_zone)::date + 7 END
  FROM new ORDER BY ts
ON CONFLICT (source_device, source_ts) WHERE source_device IS NOT NULL DO NOTHING
"""  # noqa: S608 - constants only
