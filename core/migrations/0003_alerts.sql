-- Rules, alerts and their audit history, rule-engine state, maintenance, webhooks.
-- See docs/alerts.md for the design.

-- Correlation groups devices by building; until the registry carries a structured
-- location (issue 5) this free-text column is it. NULL: correlate across the community.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS building text;

-- Rules are data. `definition` is the validated rule (core.rules) as JSON; `revision`
-- grows on every change so that running engines see edits without a restart.
CREATE SEQUENCE alert_rules_revision;
CREATE TABLE alert_rules (
    id          text PRIMARY KEY,
    definition  jsonb NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    source      text NOT NULL DEFAULT 'api',
    revision    bigint NOT NULL DEFAULT nextval('alert_rules_revision'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id          text NOT NULL,
    -- What the alert is about: 'device:<id>', 'building:<community>/<name>', ...
    subject          text NOT NULL,
    community_id     text NOT NULL,
    device_id        text,
    building         text,
    rule_type        text NOT NULL,
    severity         text NOT NULL
                     CHECK (severity IN ('info', 'warning', 'minor', 'major', 'critical')),
    initial_severity text NOT NULL,
    state            text NOT NULL
                     CHECK (state IN ('open', 'acknowledged', 'suppressed', 'resolved')),
    title            text NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    occurrences      integer NOT NULL DEFAULT 1,
    -- Condition times (device clock): when it began, when it was last seen.
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    -- Platform times: raised_at is the engine's clock when it opened the alert
    -- (escalation counts from it), created_at the database's.
    raised_at        timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    auto_resolve     boolean NOT NULL DEFAULT true,
    condition_cleared_at timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    resolved_by      text,
    resolution_note  text,
    escalate_after   interval,
    escalation_max   integer NOT NULL DEFAULT 0,
    escalation_level integer NOT NULL DEFAULT 0,
    escalated_at     timestamptz,
    -- Flood control: members of a flood point at the grouped alert.
    group_id         bigint REFERENCES alerts (id),
    notified         boolean NOT NULL DEFAULT true
);
-- The heart of "once": at most one active alert per (rule, subject). Raises go
-- through INSERT ... ON CONFLICT on this index, so two workers, or two messages a
-- millisecond apart, make one alert and an occurrence count.
CREATE UNIQUE INDEX alerts_one_active ON alerts (rule_id, subject) WHERE state <> 'resolved';
CREATE INDEX alerts_community_raised_idx ON alerts (community_id, raised_at DESC);
CREATE INDEX alerts_raised_idx ON alerts (raised_at DESC, id DESC);
CREATE INDEX alerts_device_idx ON alerts (device_id, raised_at DESC) WHERE device_id IS NOT NULL;
CREATE INDEX alerts_active_idx ON alerts (state) WHERE state <> 'resolved';
CREATE INDEX alerts_group_idx ON alerts (group_id) WHERE group_id IS NOT NULL;

-- Every transition with who, when and why: this table is the audit.
CREATE TABLE alert_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    action     text NOT NULL,
    actor      text NOT NULL,
    from_state text,
    to_state   text NOT NULL,
    severity   text NOT NULL,
    note       text NOT NULL DEFAULT '',
    details    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_history_alert_idx ON alert_history (alert_id, id);

-- Rule-engine state that outlives a restart: `for` timers, hysteresis, windows,
-- pending follow-ups, correlation groups. Written in the alert transaction.
CREATE TABLE alert_rule_state (
    rule_id    text NOT NULL,
    subject    text NOT NULL,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, subject)
);

-- How far each worker's engine has committed: on start, device events received
-- after this are evaluated again (a crash between the readings' commit and the
-- alerts' commit loses no SOS). Repeats are absorbed by the unique index.
CREATE TABLE alert_engine_progress (
    worker     text PRIMARY KEY,
    watermark  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS device_events_received_idx ON device_events (received_at);

-- An installer puts a device or a building in maintenance for a period: its alerts
-- are recorded as suppressed and nobody is notified.
CREATE TABLE maintenance_windows (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id text NOT NULL REFERENCES communities (id),
    device_id    text REFERENCES devices (id),
    building     text,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    reason       text NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (device_id IS NULL OR building IS NULL)
);
CREATE INDEX maintenance_windows_end_idx ON maintenance_windows (ends_at);

CREATE TABLE webhooks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url          text NOT NULL,
    secret       text NOT NULL,
    community_id text,
    min_severity text NOT NULL DEFAULT 'info',
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Outbox: a delivery row is written in the alert's own transaction, so a
-- notification is never lost between commit and send; a sender retries with
-- backoff and gives up into state 'dead' (the dead letter).
CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id        bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
