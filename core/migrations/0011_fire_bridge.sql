-- GB/T 26875.3 fire-panel bridge (docs/fire-bridge.md): the UITDs that may connect,
-- the panel systems and components they report (each one a platform device), and
-- the commands the centre sends them (clock sync, duty check).

-- A UITD is a registered fire device; its 6-byte address (as transmitted, low byte
-- first) is its identity on the wire.
CREATE TABLE uitds (
    device_id       text PRIMARY KEY REFERENCES devices (id),
    community_id    text NOT NULL REFERENCES communities (id),
    address         bytea NOT NULL UNIQUE CHECK (octet_length(address) = 6),
    -- Create a platform device for a component on its first report (else unknown_device).
    auto_provision  boolean NOT NULL DEFAULT false,
    -- No frame for this long (heartbeats included) is a lost link.
    heartbeat_s     integer NOT NULL DEFAULT 60 CHECK (heartbeat_s BETWEEN 5 AND 3600),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- point: '' for the UITD itself, 's{type}-{address}' for a panel system,
-- 's{type}-{address}.c{zone}-{position}' for a component. status is the last status
-- word whose events are committed: bits that change against it are the events.
CREATE TABLE uitd_points (
    uitd_id           text NOT NULL REFERENCES uitds (device_id),
    point             text NOT NULL,
    community_id      text NOT NULL REFERENCES communities (id),
    device_id         text NOT NULL UNIQUE REFERENCES devices (id),
    system_type       smallint,
    system_address    smallint,
    component_type    smallint,
    component_address bigint,
    description       text NOT NULL DEFAULT '',
    status            integer,
    status_ts         timestamptz,
    PRIMARY KEY (uitd_id, point)
);

CREATE TABLE uitd_commands (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uitd_id       text NOT NULL REFERENCES uitds (device_id),
    community_id  text NOT NULL REFERENCES communities (id),
    kind          text NOT NULL CHECK (kind IN ('clock_sync', 'duty_check')),
    serial        integer NOT NULL,
    sent_at       timestamptz NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}',
    confirmed_at  timestamptz,
    answered_at   timestamptz,
    outcome       text NOT NULL DEFAULT 'sent'
                  CHECK (outcome IN ('sent', 'confirmed', 'denied', 'answered', 'missed'))
);
CREATE INDEX uitd_commands_open_idx ON uitd_commands (uitd_id, kind, sent_at)
    WHERE outcome IN ('sent', 'confirmed');

-- Community isolation for the API role, as in 0007.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['uitds', 'uitd_points', 'uitd_commands']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY sc_community ON %I TO sc_api'
                       ' USING (sc_sees(community_id)) WITH CHECK (sc_sees(community_id))', t);
    END LOOP;
END $$;
