-- The rule engine evaluates replayed dead letters as it evaluates any message:
-- each worker remembers the last replay it has evaluated (dead_letter_replays.id).
-- NULL until the worker first starts with this version: it then starts from the
-- replays made from then on, not from the history before it.
ALTER TABLE alert_engine_progress ADD COLUMN replay_cursor bigint;

-- One device directory per pipeline process (core/directory.py, store/devices.py)
-- follows the registry through these notifications, whoever changes it (API, CLI,
-- SQL): the payload is the device id, or '*' for "read them all". Only what the
-- directory holds counts: the pipeline's own last-seen and status updates of
-- every batch notify nobody.
CREATE FUNCTION sc_device_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('sc_devices', OLD.id);
    ELSE
        PERFORM pg_notify('sc_devices', NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER devices_directory_insert_delete AFTER INSERT OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION sc_device_changed();
CREATE TRIGGER devices_directory_update AFTER UPDATE ON devices
    FOR EACH ROW WHEN (
        OLD.id IS DISTINCT FROM NEW.id
        OR OLD.community_id IS DISTINCT FROM NEW.community_id
        OR OLD.device_class IS DISTINCT FROM NEW.device_class
        OR OLD.state IS DISTINCT FROM NEW.state
        OR OLD.expected_interval_s IS DISTINCT FROM NEW.expected_interval_s
        OR OLD.building IS DISTINCT FROM NEW.building
    ) EXECUTE FUNCTION sc_device_changed();

CREATE FUNCTION sc_community_zone_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sc_devices', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER communities_directory_zone AFTER UPDATE OF time_zone ON communities
    FOR EACH STATEMENT EXECUTE FUNCTION sc_community_zone_changed();

-- The pipeline's role (0008) reads the replays it evaluates.
GRANT SELECT ON dead_letter_replays TO sc_pipeline;
