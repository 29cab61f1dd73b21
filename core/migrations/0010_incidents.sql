-- From alert to people on site (docs/incidents.md): responders, teams, duty rosters,
-- incidents grouping alerts, dispatches to responders with their delivery, timeline
-- steps, per-community targets. Row-level security as in 0007_security.sql.

-- A responder may sign in to see the incidents dispatched to them, and nothing else.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('admin', 'installer', 'operator', 'viewer', 'responder'));

-- Where a missed target ends up after the roster and the team leader: the street-level
-- (乡镇/街道) control room, and the gateway (SMS, app) that carries dispatches.
ALTER TABLE communities
    ADD COLUMN street_control_room text NOT NULL DEFAULT '',
    ADD COLUMN dispatch_webhook_url text,
    ADD COLUMN dispatch_webhook_secret text;

CREATE TABLE responders (
    id              text PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    name            text NOT NULL,
    role            text NOT NULL CHECK (role IN ('micro_fire_station', 'grid_worker',
                                                  'care_worker', 'guard', 'property_manager')),
    phone           text NOT NULL DEFAULT '',
    -- Optional MQTT login (broker export) and API user (role responder).
    mqtt_username   text UNIQUE,
    mqtt_password_hash text,
    user_id         bigint UNIQUE REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX responders_community_idx ON responders (community_id);

-- A resident's care worker: an SOS dispatches them.
ALTER TABLE residents ADD COLUMN care_worker_id text REFERENCES responders (id)
    ON DELETE SET NULL;

CREATE TABLE teams (
    id              text PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    -- NULL: the whole community.
    building_id     text,
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('micro_fire_station', 'grid', 'care',
                                                  'security', 'property')),
    leader_id       text REFERENCES responders (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX teams_community_idx ON teams (community_id, kind);

-- Shifts by weekday (0 Monday .. 6 Sunday) and local time in the community's zone;
-- ends <= starts: the shift runs past midnight into the next day.
CREATE TABLE shifts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    team_id         text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    responder_id    text NOT NULL REFERENCES responders (id) ON DELETE CASCADE,
    weekday         integer NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    starts          time NOT NULL,
    ends            time NOT NULL
);
CREATE INDEX shifts_team_idx ON shifts (team_id);

-- Leave (nobody instead) or a swap (the substitute works the responder's shifts).
CREATE TABLE roster_exceptions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    responder_id    text NOT NULL REFERENCES responders (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('leave', 'swap')),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    substitute_id   text REFERENCES responders (id) ON DELETE CASCADE,
    CHECK (ends_at > starts_at),
    CHECK ((kind = 'swap') = (substitute_id IS NOT NULL))
);
CREATE INDEX roster_exceptions_responder_idx ON roster_exceptions (responder_id, ends_at);

-- Per community and incident type; none: the defaults of core/incidents.py.
CREATE TABLE incident_targets (
    community_id    text NOT NULL REFERENCES communities (id),
    incident_type   text NOT NULL CHECK (incident_type IN ('fire', 'sos', 'intrusion', 'other')),
    ack_s           integer NOT NULL CHECK (ack_s > 0),
    dispatch_s      integer NOT NULL CHECK (dispatch_s > 0),
    accept_s        integer NOT NULL CHECK (accept_s > 0),
    arrival_s       integer NOT NULL CHECK (arrival_s > 0),
    resolve_s       integer NOT NULL CHECK (resolve_s > 0),
    PRIMARY KEY (community_id, incident_type)
);

CREATE TABLE incidents (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    text NOT NULL REFERENCES communities (id),
    building        text,
    resident_id     text,
    incident_type   text NOT NULL CHECK (incident_type IN ('fire', 'sos', 'intrusion', 'other')),
    title           text NOT NULL,
    stage           text NOT NULL DEFAULT 'raised'
                    CHECK (stage IN ('raised', 'acknowledged', 'dispatched', 'accepted',
                                     'on_scene', 'resolved')),
    opened_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    dispatched_at   timestamptz,
    accepted_at     timestamptz,
    arrived_at      timestamptz,
    resolved_at     timestamptz,
    auto_dispatched boolean NOT NULL DEFAULT false,
    -- Targets already escalated for (ack, dispatch, arrival, resolve): once each.
    escalated       text[] NOT NULL DEFAULT '{}',
    escalations     integer NOT NULL DEFAULT 0
);
CREATE INDEX incidents_open_idx ON incidents (community_id, building) WHERE resolved_at IS NULL;
CREATE INDEX incidents_opened_idx ON incidents (community_id, opened_at);

CREATE TABLE incident_alerts (
    alert_id        bigint PRIMARY KEY REFERENCES alerts (id),
    incident_id     bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    community_id    text NOT NULL REFERENCES communities (id)
);
CREATE INDEX incident_alerts_incident_idx ON incident_alerts (incident_id);

CREATE TABLE dispatches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id     bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    community_id    text NOT NULL REFERENCES communities (id),
    responder_id    text NOT NULL REFERENCES responders (id),
    team_id         text REFERENCES teams (id) ON DELETE SET NULL,
    -- 0: first call; 1..: escalations that called this responder.
    level           integer NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'sent'
                    CHECK (state IN ('sent', 'accepted', 'declined', 'arrived', 'timed_out',
                                     'cancelled')),
    dispatched_at   timestamptz NOT NULL,
    dispatched_by   text NOT NULL,
    -- Pushed to the responder (MQTT published with QoS 1 / webhook answered 2xx) and
    -- received by their device or app (its "received" reply).
    delivered_at    timestamptz,
    received_at     timestamptz,
    accepted_at     timestamptz,
    arrived_at      timestamptz,
    closed_at       timestamptz
);
CREATE INDEX dispatches_incident_idx ON dispatches (incident_id);
CREATE INDEX dispatches_responder_idx ON dispatches (responder_id, state);

-- The outbox of pushes to responders: one row per channel, delivered by the pipeline.
CREATE TABLE dispatch_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dispatch_id     bigint NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE,
    community_id    text NOT NULL REFERENCES communities (id),
    channel         text NOT NULL CHECK (channel IN ('mqtt', 'webhook')),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX dispatch_deliveries_pending_idx ON dispatch_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- The timeline: raised, acknowledged, dispatched, delivered, received, accepted,
-- declined, on_scene, escalated, resolved, attached (another alert) - who and when.
CREATE TABLE incident_steps (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id     bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    community_id    text NOT NULL REFERENCES communities (id),
    step            text NOT NULL,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    responder_id    text,
    dispatch_id     bigint,
    detail          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_steps_incident_idx ON incident_steps (incident_id, at, id);

-- The API's grants (0007 set default privileges; repeated so that the order of
-- migrations does not matter) and one policy per table.
GRANT SELECT, INSERT, UPDATE, DELETE ON responders, teams, shifts, roster_exceptions,
    incident_targets, incidents, incident_alerts, dispatches, dispatch_deliveries,
    incident_steps TO sc_api;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['responders', 'teams', 'shifts', 'roster_exceptions',
                             'incident_targets', 'incidents', 'incident_alerts', 'dispatches',
                             'dispatch_deliveries', 'incident_steps']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY sc_community ON %I TO sc_api'
                       ' USING (sc_sees(community_id)) WITH CHECK (sc_sees(community_id))', t);
    END LOOP;
END $$;

-- sc_locate (0007) for this migration's objects: "another community's" must be told
-- from "does not exist" for the audit, and both answered alike.
CREATE FUNCTION sc_locate_incident(entity text, key text) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    CASE entity
    WHEN 'responder' THEN
        RETURN (SELECT ARRAY[community_id] FROM responders WHERE id = key);
    WHEN 'team' THEN
        RETURN (SELECT ARRAY[community_id] FROM teams WHERE id = key);
    WHEN 'incident' THEN
        RETURN (SELECT ARRAY[community_id] FROM incidents WHERE id = key::bigint);
    WHEN 'dispatch' THEN
        RETURN (SELECT ARRAY[community_id, responder_id] FROM dispatches WHERE id = key::bigint);
    ELSE
        RAISE EXCEPTION 'sc_locate_incident: unknown entity %', entity;
    END CASE;
END $$;
REVOKE ALL ON FUNCTION sc_locate_incident(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sc_locate_incident(text, text) TO sc_api;

-- The pipeline's incident desk (alerts/incident_desk.py) runs as sc_pipeline (0008): it
-- reads rosters and targets, writes incidents, dispatches, deliveries and the timeline,
-- of every community.
GRANT SELECT ON responders, teams, shifts, roster_exceptions, incident_targets TO sc_pipeline;
GRANT SELECT, INSERT, UPDATE ON incidents, incident_alerts, dispatches, dispatch_deliveries,
    incident_steps TO sc_pipeline;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['responders', 'teams', 'shifts', 'roster_exceptions',
                             'incident_targets', 'incidents', 'incident_alerts', 'dispatches',
                             'dispatch_deliveries', 'incident_steps']
    LOOP
        EXECUTE format('CREATE POLICY sc_pipeline ON %I TO sc_pipeline'
                       ' USING (true) WITH CHECK (true)', t);
    END LOOP;
END $$;
