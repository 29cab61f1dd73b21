-- Elderly care visits: who visited whom, when, with what outcome; residents' visit
-- policies; follow-up tasks. See docs/visits.md.

-- How often a resident must be visited. 'none': not in the visit programme.
ALTER TABLE residents
    ADD COLUMN visit_policy text NOT NULL DEFAULT 'none'
        CHECK (visit_policy IN ('none', 'monthly', 'weekly'));
CREATE INDEX residents_visit_policy_idx ON residents (community_id)
    WHERE visit_policy <> 'none';

-- The visit rule warns when a resident is not yet visited by this day of the month
-- (in the community's time zone) and escalates on the month's last day.
ALTER TABLE communities
    ADD COLUMN visit_deadline_day integer NOT NULL DEFAULT 25
        CHECK (visit_deadline_day BETWEEN 1 AND 28);

CREATE TABLE visits (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    -- No foreign key: forgetting a resident (DELETE /residents/{id}) keeps the
    -- figures of past months; the route deletes the notes with the person.
    resident_id     text NOT NULL,
    worker          text NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    outcome         text NOT NULL
                    CHECK (outcome IN ('well', 'needs_follow_up', 'not_at_home')),
    notes           text NOT NULL DEFAULT '',
    -- 'api', 'cli', 'device' (a visit_checkin event), 'simulator'.
    source          text NOT NULL DEFAULT 'api',
    -- A check-in imported from device_events: its natural key, so importing twice
    -- changes nothing.
    source_device   text,
    source_ts       timestamptz,
    source_received_at timestamptz,
    follow_up_due   date,
    follow_up_done_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK ((follow_up_due IS NULL) OR outcome = 'needs_follow_up')
);
CREATE INDEX visits_community_started_idx ON visits (community_id, started_at);
CREATE INDEX visits_resident_idx ON visits (resident_id, started_at);
CREATE UNIQUE INDEX visits_source_idx ON visits (source_device, source_ts)
    WHERE source_device IS NOT NULL;
CREATE INDEX visits_open_follow_up_idx ON visits (community_id, follow_up_due)
    WHERE follow_up_due IS NOT NULL AND follow_up_done_at IS NULL;

CREATE TRIGGER visits_audit AFTER INSERT OR UPDATE OR DELETE ON visits
    FOR EACH ROW EXECUTE FUNCTION sc_audit('visit', 'id', 'community_id', '{}', '{notes}');

-- A later visit that saw the resident closes their open follow-ups, whichever way it
-- was recorded (API, CLI, a device's check-in).
CREATE FUNCTION sc_close_follow_ups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE visits SET follow_up_done_at = NEW.started_at
     WHERE resident_id = NEW.resident_id AND id <> NEW.id
       AND follow_up_due IS NOT NULL AND follow_up_done_at IS NULL
       AND started_at < NEW.started_at;
    RETURN NULL;
END
$$;
CREATE TRIGGER visits_close_follow_ups AFTER INSERT ON visits FOR EACH ROW
    WHEN (NEW.outcome IN ('well', 'needs_follow_up'))
    EXECUTE FUNCTION sc_close_follow_ups();
