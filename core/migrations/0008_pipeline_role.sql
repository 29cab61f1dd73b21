-- Roles of their own (docs/security.md): the pipeline (gateway, ingest writer, rule
-- engine, webhook sender) runs as sc_pipeline, which may write what ingest and alerting
-- write and read what they read, and nothing else: no users, tokens or broker
-- accounts, no schema changes. Migrations and the storage maintenance (partitions,
-- retention, rollups) stay with the owner. And the time-series tables the API reads
-- (readings, device_events, dead_letters) get row-level security of their own.

DO $$
BEGIN
    CREATE ROLE sc_pipeline NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
-- The pipeline logs in as the migrating role and switches to it (-c role=sc_pipeline
-- at connect, SC_INGEST__DATABASE_ROLE); a deployment may instead give it a LOGIN
-- role of its own that is a member of sc_pipeline.
DO $$
BEGIN
    EXECUTE format('GRANT sc_pipeline TO %I', current_user);
EXCEPTION WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN
    NULL;
END $$;

GRANT USAGE ON SCHEMA public TO sc_pipeline;
-- Staging tables of the writer (CREATE TEMP TABLE ... LIKE readings).
DO $$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO sc_pipeline', current_database());
END $$;

-- What it reads to validate, route and evaluate.
GRANT SELECT ON communities, devices, storage_config, alert_rules, maintenance_windows,
    webhooks, residents, visits, readings, device_events TO sc_pipeline;
-- What it writes: telemetry, refusals, the device's presence, its own counters.
GRANT SELECT, INSERT ON dead_letters TO sc_pipeline;
GRANT INSERT ON readings, device_events TO sc_pipeline;
GRANT UPDATE (last_seen, last_received_at, online, status_at) ON devices TO sc_pipeline;
GRANT SELECT, INSERT, UPDATE ON latest, pipeline_metrics TO sc_pipeline;
-- Alerting: alerts and their history, rule state and progress, the built-in rules it
-- seeds (LOCK TABLE alert_rules needs UPDATE), webhook deliveries.
GRANT SELECT, INSERT, UPDATE ON alerts, alert_history, alert_engine_progress,
    webhook_deliveries TO sc_pipeline;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_rule_state TO sc_pipeline;
GRANT INSERT, UPDATE ON alert_rules TO sc_pipeline;
GRANT USAGE ON SEQUENCE alert_rules_revision TO sc_pipeline;
-- The audit triggers of the tables above write as the invoker.
GRANT INSERT ON audit_log TO sc_pipeline;
-- The rule engine's visit check copies device check-ins into visits; the follow-up
-- trigger then closes the resident's earlier open follow-ups.
GRANT INSERT, UPDATE (follow_up_done_at) ON visits TO sc_pipeline;
-- Plain PostgreSQL only: the hours a batch wrote into, for the rollup refresh.
DO $$
BEGIN
    IF to_regclass('rollup_dirty') IS NOT NULL THEN
        GRANT INSERT ON rollup_dirty TO sc_pipeline;
    END IF;
END $$;

-- The pipeline handles every community: on the tables under row-level security its
-- privileges above are the limit, not a community.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['communities', 'devices', 'residents', 'alerts', 'alert_history',
                             'maintenance_windows', 'visits', 'latest', 'webhooks',
                             'webhook_deliveries', 'alert_rules', 'audit_log', 'dead_letters']
    LOOP
        EXECUTE format('CREATE POLICY sc_pipeline ON %I TO sc_pipeline'
                       ' USING (true) WITH CHECK (true)', t);
    END LOOP;
END $$;

-- Row-level security for the API on the time series: a dead letter is seen through its
-- topic's community (community/C/...; anything else only with '*'), a reading or an
-- event through its device, whose own policy keys on the community.
CREATE POLICY sc_community ON dead_letters TO sc_api
    USING (sc_sees(split_part(topic, '/', 2))) WITH CHECK (sc_sees(split_part(topic, '/', 2)));
ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;

-- TimescaleDB refuses row-level security on a hypertable with compression, and its
-- chunks would not inherit the policies anyway: there the series stay reached through
-- their checked device (docs/security.md). On plain PostgreSQL the partitioned tables
-- get it, and their partitions are closed to both roles (reading a partition directly
-- would skip the parent's policies; rows go in and out through the parent only).
DO $$
DECLARE
    t text;
    part regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM storage_config WHERE path = 'timescaledb') THEN
        RAISE NOTICE 'TimescaleDB: no row-level security on readings and device_events';
        RETURN;
    END IF;
    FOREACH t IN ARRAY ARRAY['readings', 'device_events'] LOOP
        EXECUTE format('CREATE POLICY sc_community ON %I TO sc_api'
                       ' USING (EXISTS (SELECT 1 FROM devices AS d WHERE d.id = device_id))'
                       ' WITH CHECK (EXISTS (SELECT 1 FROM devices AS d WHERE d.id = device_id))',
                       t);
        EXECUTE format('CREATE POLICY sc_pipeline ON %I TO sc_pipeline'
                       ' USING (true) WITH CHECK (true)', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = t::regclass
        LOOP
            EXECUTE format('REVOKE ALL ON %s FROM sc_api, sc_pipeline', part);
        END LOOP;
    END LOOP;
    -- The rollups the maintenance task fills (plain tables here), read by the API
    -- through the readings_1h/1d views: those must check as their caller, not as
    -- their owner, who is not subject to the policies (PostgreSQL 15 and later).
    FOREACH t IN ARRAY ARRAY['rollup_hourly', 'rollup_daily'] LOOP
        IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass(t) AND relkind = 'r') THEN
            EXECUTE format('CREATE POLICY sc_community ON %I TO sc_api'
                           ' USING (EXISTS (SELECT 1 FROM devices AS d WHERE d.id = device_id))',
                           t);
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        END IF;
    END LOOP;
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW readings_1h SET (security_invoker = true);
        ALTER VIEW readings_1d SET (security_invoker = true);
    ELSE
        RAISE NOTICE 'PostgreSQL before 15: readings_1h and readings_1d read as their owner';
    END IF;
    IF to_regprocedure('sc_ensure_day_partition(text, date)') IS NOT NULL THEN
        ALTER FUNCTION sc_ensure_day_partition(text, date) RENAME TO sc_create_day_partition;
        -- The owner's default privileges give new tables to sc_api: not a partition.
        CREATE FUNCTION sc_ensure_day_partition(parent text, day date) RETURNS boolean
        LANGUAGE plpgsql AS $fn$
        DECLARE
            made boolean := sc_create_day_partition(parent, day);
        BEGIN
            IF made THEN
                EXECUTE format('REVOKE ALL ON %I FROM sc_api, sc_pipeline',
                               parent || '_p' || to_char(day, 'YYYYMMDD'));
            END IF;
            RETURN made;
        END
        $fn$;
    END IF;
END $$;
