-- The device registry and who may use it: structured location (buildings, units),
-- residents, device lifecycle and MQTT credentials, users with roles scoped to
-- communities, tokens that belong to users, and the audit log. See docs/installer.md.

-- --- Where things are --------------------------------------------------------------------

CREATE TABLE buildings (
    community_id text NOT NULL REFERENCES communities (id),
    id           text NOT NULL,
    name         text NOT NULL DEFAULT '',
    address      text NOT NULL DEFAULT '',
    floors       integer CHECK (floors BETWEEN 1 AND 300),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, id)
);

-- A flat, a room, a plant room: the place inside a building.
CREATE TABLE units (
    community_id text NOT NULL,
    building_id  text NOT NULL,
    id           text NOT NULL,
    floor        integer CHECK (floor BETWEEN -10 AND 300),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, building_id, id),
    FOREIGN KEY (community_id, building_id) REFERENCES buildings (community_id, id)
);

-- People in elderly care. As little as a responder needs: who, where, what to know
-- before entering (vulnerability flags from a fixed list), whom to call.
CREATE TABLE residents (
    id              text PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    name            text NOT NULL,
    building        text,
    unit            text,
    address         text NOT NULL DEFAULT '',
    vulnerabilities text[] NOT NULL DEFAULT '{}',
    contacts        jsonb NOT NULL DEFAULT '[]',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (community_id, building) REFERENCES buildings (community_id, id),
    FOREIGN KEY (community_id, building, unit) REFERENCES units (community_id, building_id, id)
);
CREATE INDEX residents_community_idx ON residents (community_id, id);

-- --- Devices: place, owner, lifecycle, credentials -------------------------------------------
-- devices.building (the rule engine's correlation key, 0003) is a building id here.
-- It has no foreign key: the simulators and older tools write buildings the registry
-- has not heard of, and the API and the CSV import check it instead.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS building text;
ALTER TABLE devices
    ADD COLUMN unit                   text,
    ADD COLUMN resident_id            text REFERENCES residents (id),
    ADD COLUMN installed_at           timestamptz,
    ADD COLUMN installed_by           text,
    ADD COLUMN updated_at             timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN decommissioned_at      timestamptz,
    -- Mosquitto's $7$ PBKDF2-SHA512 line for the device's password; never the password.
    ADD COLUMN mqtt_password_hash     text,
    ADD COLUMN credentials_rotated_at timestamptz;
CREATE INDEX devices_resident_idx ON devices (resident_id) WHERE resident_id IS NOT NULL;

-- Service accounts on the broker (the pipeline, the API). They share the broker's
-- user name space with devices, so the registry keeps the two apart.
CREATE TABLE mqtt_accounts (
    username      text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('pipeline', 'api')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz
);

-- --- People, roles and tokens ------------------------------------------------------------

CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    role            text NOT NULL CHECK (role IN ('admin', 'installer', 'operator', 'viewer')),
    -- Every community, present and future: the platform's own administrators.
    all_communities boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz
);

CREATE TABLE user_communities (
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    community_id text NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, community_id)
);
CREATE INDEX user_communities_community_idx ON user_communities (community_id);

-- Tokens made before users existed (by `smartcommunity token create`, the demo)
-- belong to the built-in administrator, which the CLI keeps using by default.
INSERT INTO users (name, role, all_communities) VALUES ('admin', 'admin', true);
ALTER TABLE api_tokens ADD COLUMN user_id bigint REFERENCES users (id);
UPDATE api_tokens SET user_id = (SELECT id FROM users WHERE name = 'admin');
ALTER TABLE api_tokens ALTER COLUMN user_id SET NOT NULL;
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- --- Audit -------------------------------------------------------------------------------
-- Every change to the registry, users, tokens, rules and alerts, written by triggers in
-- the changing transaction, so that no code path (API, CLI, engine, psql) can skip it.
-- The actor is the session setting sc.actor (the API sets "user:<name>"; the CLI
-- "cli:<os user>"); without it, the database role.

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text NOT NULL,
    action       text NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    entity       text NOT NULL,
    entity_id    text NOT NULL,
    community_id text,
    changed      text[] NOT NULL DEFAULT '{}',
    before       jsonb,
    after        jsonb
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id, id);
CREATE INDEX audit_log_community_idx ON audit_log (community_id, id);
CREATE INDEX audit_log_at_idx ON audit_log (at);

-- sc_audit(entity, id column, community column or '', excluded columns, redacted columns)
-- Excluded columns never reach the log (secrets, counters); redacted ones (personal
-- data) show only that they changed.
CREATE FUNCTION sc_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    excluded text[] := TG_ARGV[3]::text[];
    redacted text[] := TG_ARGV[4]::text[];
    old_row  jsonb;
    new_row  jsonb;
    subject  jsonb;
    changed  text[];
    col      text;
BEGIN
    IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD) - excluded; END IF;
    IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW) - excluded; END IF;
    subject := coalesce(new_row, old_row);
    SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO changed
      FROM jsonb_object_keys(subject) AS k
     WHERE old_row IS NULL OR new_row IS NULL OR new_row -> k IS DISTINCT FROM old_row -> k;
    IF TG_OP = 'UPDATE' AND cardinality(changed) = 0 THEN
        RETURN NULL;
    END IF;
    FOREACH col IN ARRAY redacted LOOP
        IF old_row IS NOT NULL AND jsonb_typeof(old_row -> col) NOT IN ('null') THEN
            old_row := jsonb_set(old_row, ARRAY[col], '"[redacted]"');
        END IF;
        IF new_row IS NOT NULL AND jsonb_typeof(new_row -> col) NOT IN ('null') THEN
            new_row := jsonb_set(new_row, ARRAY[col], '"[redacted]"');
        END IF;
    END LOOP;
    INSERT INTO audit_log (actor, action, entity, entity_id, community_id, changed, before, after)
    VALUES (
        coalesce(nullif(current_setting('sc.actor', true), ''), 'db:' || session_user),
        lower(TG_OP),
        TG_ARGV[0],
        subject ->> TG_ARGV[1],
        CASE WHEN TG_ARGV[2] = '' THEN NULL ELSE subject ->> TG_ARGV[2] END,
        changed,
        old_row,
        new_row
    );
    RETURN NULL;
END
$$;

-- Devices: the ingest writer updates last_seen and the status with every batch; the
-- WHEN clause keeps those updates (thousands a second) from reaching the function.
CREATE TRIGGER devices_audit AFTER INSERT OR DELETE ON devices FOR EACH ROW
    EXECUTE FUNCTION sc_audit('device', 'id', 'community_id',
        '{last_seen,last_received_at,online,status_at,mqtt_password_hash}', '{}');
CREATE TRIGGER devices_audit_update AFTER UPDATE ON devices FOR EACH ROW
    WHEN ((OLD.community_id, OLD.device_class, OLD.model, OLD.name, OLD.state,
           OLD.expected_interval_s, OLD.building, OLD.unit, OLD.resident_id,
           OLD.installed_at, OLD.installed_by, OLD.mqtt_password_hash)
          IS DISTINCT FROM
          (NEW.community_id, NEW.device_class, NEW.model, NEW.name, NEW.state,
           NEW.expected_interval_s, NEW.building, NEW.unit, NEW.resident_id,
           NEW.installed_at, NEW.installed_by, NEW.mqtt_password_hash))
    EXECUTE FUNCTION sc_audit('device', 'id', 'community_id',
        '{last_seen,last_received_at,online,status_at,mqtt_password_hash}', '{}');

CREATE TRIGGER communities_audit AFTER INSERT OR UPDATE OR DELETE ON communities
    FOR EACH ROW EXECUTE FUNCTION sc_audit('community', 'id', 'id', '{}', '{}');
CREATE TRIGGER buildings_audit AFTER INSERT OR UPDATE OR DELETE ON buildings
    FOR EACH ROW EXECUTE FUNCTION sc_audit('building', 'id', 'community_id', '{}', '{}');
CREATE TRIGGER units_audit AFTER INSERT OR UPDATE OR DELETE ON units
    FOR EACH ROW EXECUTE FUNCTION sc_audit('unit', 'id', 'community_id', '{}', '{}');
CREATE TRIGGER residents_audit AFTER INSERT OR UPDATE OR DELETE ON residents
    FOR EACH ROW EXECUTE FUNCTION sc_audit('resident', 'id', 'community_id', '{}',
        '{name,address,contacts}');
CREATE TRIGGER mqtt_accounts_audit AFTER INSERT OR UPDATE OR DELETE ON mqtt_accounts
    FOR EACH ROW EXECUTE FUNCTION sc_audit('mqtt_account', 'username', '',
        '{password_hash}', '{}');
CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION sc_audit('user', 'id', '', '{}', '{}');
CREATE TRIGGER user_communities_audit AFTER INSERT OR DELETE ON user_communities
    FOR EACH ROW EXECUTE FUNCTION sc_audit('user_community', 'user_id', 'community_id',
        '{}', '{}');
-- last_used_at moves once a minute per token in use: not a change anyone made.
CREATE TRIGGER api_tokens_audit AFTER INSERT OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION sc_audit('token', 'id', '', '{token_hash,last_used_at}', '{}');
CREATE TRIGGER api_tokens_audit_update AFTER UPDATE ON api_tokens FOR EACH ROW
    WHEN ((OLD.name, OLD.expires_at, OLD.revoked_at, OLD.user_id)
          IS DISTINCT FROM (NEW.name, NEW.expires_at, NEW.revoked_at, NEW.user_id))
    EXECUTE FUNCTION sc_audit('token', 'id', '', '{token_hash,last_used_at}', '{}');

-- Rules and alerts (0003). An alert's occurrences and last_seen move with every repeat
-- of its condition; what people and the engine decide (state, severity) is the change.
CREATE TRIGGER alert_rules_audit AFTER INSERT OR UPDATE OR DELETE ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION sc_audit('rule', 'id', '', '{}', '{}');
CREATE TRIGGER alerts_audit AFTER INSERT OR DELETE ON alerts
    FOR EACH ROW EXECUTE FUNCTION sc_audit('alert', 'id', 'community_id', '{}', '{}');
CREATE TRIGGER alerts_audit_update AFTER UPDATE ON alerts FOR EACH ROW
    WHEN ((OLD.state, OLD.severity, OLD.acknowledged_by, OLD.resolved_by, OLD.group_id)
          IS DISTINCT FROM (NEW.state, NEW.severity, NEW.acknowledged_by, NEW.resolved_by,
                            NEW.group_id))
    EXECUTE FUNCTION sc_audit('alert', 'id', 'community_id',
        '{occurrences,last_seen,updated_at}', '{}');
CREATE TRIGGER maintenance_windows_audit AFTER INSERT OR UPDATE OR DELETE
    ON maintenance_windows
    FOR EACH ROW EXECUTE FUNCTION sc_audit('maintenance', 'id', 'community_id', '{}', '{}');
CREATE TRIGGER webhooks_audit AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION sc_audit('webhook', 'id', 'community_id', '{secret}', '{}');
