-- Storage that lasts: the configuration record and the latest value per device and metric.
-- The part that depends on TimescaleDB being installed (hypertables, compression,
-- continuous aggregates; or day partitions and rollup tables) is made by
-- core.storage_layout.install in this same transaction: SQL cannot take that branch.
-- docs/storage.md describes every table and view for people who query them.

-- One row. Retention is changed with `smartcommunity db retention`, which also
-- moves the TimescaleDB policies; editing the row by hand does not.
CREATE TABLE storage_config (
    id                      boolean PRIMARY KEY DEFAULT true CHECK (id),
    path                    text NOT NULL DEFAULT 'postgresql'
                            CHECK (path IN ('postgresql', 'timescaledb')),
    chunk_interval          interval NOT NULL DEFAULT '1 day',
    compress_after          interval NOT NULL DEFAULT '7 days',
    raw_retention           interval NOT NULL DEFAULT '400 days',
    -- Rollups outlive the raw rows they summarise: about 3 and 10 years.
    hourly_retention        interval NOT NULL DEFAULT '1100 days',
    daily_retention         interval NOT NULL DEFAULT '3660 days',
    -- The gateway accepts device time up to 24 h ahead; a week of partitions
    -- ahead rides out a maintenance task that has not run for days.
    partitions_ahead        integer NOT NULL DEFAULT 7,
    daily_time_zone         text NOT NULL DEFAULT 'Asia/Shanghai',
    rollup_backfill_pending boolean NOT NULL DEFAULT false,
    -- Plain PostgreSQL: rollup tables hold the hours before this; the views
    -- readings_1h / readings_1d add what is newer from raw rows.
    rollup_watermark        timestamptz NOT NULL DEFAULT '-infinity',
    changed_at              timestamptz NOT NULL DEFAULT now(),
    last_maintenance_at     timestamptz,
    last_maintenance        jsonb
);
INSERT INTO storage_config DEFAULT VALUES;

-- Newest value per device and metric by device time, kept by the ingest writer in
-- each batch's transaction. community_id is copied from the device so that the
-- current state of a community is one index range read.
CREATE TABLE latest (
    device_id    text NOT NULL,
    metric       text NOT NULL,
    community_id text NOT NULL,
    ts           timestamptz NOT NULL,
    value        double precision NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITH (fillfactor = 50);
CREATE INDEX latest_community_idx ON latest (community_id, device_id, metric);

INSERT INTO latest (device_id, metric, community_id, ts, value, received_at)
SELECT DISTINCT ON (r.device_id, r.metric)
       r.device_id, r.metric, d.community_id, r.ts, r.value, r.received_at
  FROM readings AS r
  JOIN devices AS d ON d.id = r.device_id
 ORDER BY r.device_id, r.metric, r.ts DESC;
