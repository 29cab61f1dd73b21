-- Registry, time series, dead letters, tokens and pipeline metrics.
-- Natural keys make redelivery harmless: the pipeline inserts with ON CONFLICT DO NOTHING.

CREATE TABLE communities (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'urban' CHECK (kind IN ('urban', 'rural')),
    time_zone   text NOT NULL DEFAULT 'Asia/Shanghai',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id                  text PRIMARY KEY,
    community_id        text NOT NULL REFERENCES communities (id),
    device_class        text NOT NULL,
    model               text NOT NULL DEFAULT '',
    name                text NOT NULL DEFAULT '',
    state               text NOT NULL DEFAULT 'active'
                        CHECK (state IN ('active', 'maintenance', 'decommissioned')),
    expected_interval_s integer NOT NULL DEFAULT 300 CHECK (expected_interval_s > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Newest device time seen; never moves backwards (late readings leave it alone).
    last_seen           timestamptz,
    last_received_at    timestamptz,
    online              boolean,
    status_at           timestamptz
) WITH (fillfactor = 70);  -- room for HOT updates: last_seen changes with every batch
CREATE INDEX devices_community_idx ON devices (community_id, device_class);

CREATE TABLE readings (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    seq         bigint,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
);

CREATE TABLE device_events (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    event       text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    seq         bigint,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, ts, event)
);

CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    worker      text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);

-- Bearer tokens: only a SHA-256 of the 256-bit random secret is kept.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Each pipeline worker publishes its counters here; the API renders them for Prometheus.
CREATE TABLE pipeline_metrics (
    worker     text PRIMARY KEY,
    updated_at timestamptz NOT NULL,
    counters   jsonb NOT NULL
);
