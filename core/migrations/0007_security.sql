-- Community isolation inside PostgreSQL (docs/security.md): the API runs its queries
-- as sc_api, a role without BYPASSRLS that owns nothing, and names the caller's
-- communities in the setting sc.communities ('*': every community; a JSON array
-- otherwise; unset or '': none). A route that forgets its own check then sees
-- nothing of another community. The pipeline, the CLI and migrations connect as the
-- database's owner and are not subject to these policies.

-- Refused cross-community attempts are audited too.
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_action_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_action_check
    CHECK (action IN ('insert', 'update', 'delete', 'refused'));

-- Roles belong to the cluster, not the database: another database of the same
-- cluster may have created it already (or be creating it right now).
DO $$
BEGIN
    CREATE ROLE sc_api NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
-- The API logs in as the migrating role and switches with SET ROLE sc_api.
DO $$
BEGIN
    EXECUTE format('GRANT sc_api TO %I', current_user);
EXCEPTION WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN
    NULL;
END $$;

GRANT USAGE ON SCHEMA public TO sc_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO sc_api;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO sc_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sc_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO sc_api;
-- Migrations are the owner's business only.
REVOKE ALL ON schema_migrations FROM sc_api;

-- Whether this request may see a community. NULL (a global rule or webhook) only for
-- a caller of every community.
CREATE FUNCTION sc_sees(community text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE coalesce(current_setting('sc.communities', true), '')
        WHEN '*' THEN true
        WHEN '' THEN false
        ELSE coalesce(current_setting('sc.communities', true)::jsonb ? community, false)
    END
$$;

-- An object's community ({NULL} for a global rule or webhook; NULL: no such object),
-- looked up past the policies: the API must tell "another community's" (audited,
-- and not free to create) from "does not exist", and still answer both alike.
CREATE FUNCTION sc_locate(entity text, key text) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    CASE entity
    WHEN 'community' THEN
        RETURN (SELECT ARRAY[id] FROM communities WHERE id = key);
    WHEN 'device' THEN
        RETURN (SELECT ARRAY[community_id] FROM devices WHERE id = key);
    WHEN 'resident' THEN
        RETURN (SELECT ARRAY[community_id] FROM residents WHERE id = key);
    WHEN 'alert' THEN
        RETURN (SELECT ARRAY[community_id] FROM alerts WHERE id = key::bigint);
    WHEN 'maintenance' THEN
        RETURN (SELECT ARRAY[community_id] FROM maintenance_windows WHERE id = key::bigint);
    WHEN 'rule' THEN
        RETURN (SELECT ARRAY[definition->'scope'->>'community'] FROM alert_rules WHERE id = key);
    WHEN 'webhook' THEN
        RETURN (SELECT ARRAY[community_id] FROM webhooks WHERE id = key::bigint);
    WHEN 'delivery' THEN
        RETURN (SELECT ARRAY[w.community_id] FROM webhook_deliveries AS d
                  JOIN webhooks AS w ON w.id = d.webhook_id WHERE d.id = key::bigint);
    ELSE
        RAISE EXCEPTION 'sc_locate: unknown entity %', entity;
    END CASE;
END $$;
REVOKE ALL ON FUNCTION sc_locate(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sc_locate(text, text) TO sc_api;

-- One policy per table, for sc_api only (the owner is not subject to RLS unless
-- FORCEd, and must not be: the pipeline writes every community).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['devices', 'buildings', 'units', 'residents', 'alerts',
                             'maintenance_windows', 'visits', 'latest']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY sc_community ON %I TO sc_api'
                       ' USING (sc_sees(community_id)) WITH CHECK (sc_sees(community_id))', t);
    END LOOP;
END $$;

ALTER TABLE communities ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_community ON communities TO sc_api
    USING (sc_sees(id)) WITH CHECK (sc_sees(id));

-- A global webhook (no community) sends every community's alerts to a URL that may
-- carry a secret: only callers of every community see or change it.
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_community ON webhooks TO sc_api
    USING (sc_sees(community_id)) WITH CHECK (sc_sees(community_id));

-- Global rules (no community) are read by everyone, changed by callers of every
-- community only.

ALTER TABLE alert_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_community ON alert_rules TO sc_api
    USING (definition->'scope'->>'community' IS NULL
           OR sc_sees(definition->'scope'->>'community'))
    WITH CHECK (sc_sees(definition->'scope'->>'community'));
CREATE POLICY sc_global_write ON alert_rules AS RESTRICTIVE FOR UPDATE TO sc_api
    USING (sc_sees(definition->'scope'->>'community'));
CREATE POLICY sc_global_delete ON alert_rules AS RESTRICTIVE FOR DELETE TO sc_api
    USING (sc_sees(definition->'scope'->>'community'));

-- Rows without a community column follow their parent (whose own policy applies
-- inside the subquery).
ALTER TABLE alert_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_community ON alert_history TO sc_api
    USING (EXISTS (SELECT 1 FROM alerts AS a WHERE a.id = alert_id))
    WITH CHECK (EXISTS (SELECT 1 FROM alerts AS a WHERE a.id = alert_id));
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_community ON webhook_deliveries TO sc_api
    USING (EXISTS (SELECT 1 FROM webhooks AS w WHERE w.id = webhook_id))
    WITH CHECK (EXISTS (SELECT 1 FROM webhooks AS w WHERE w.id = webhook_id));

-- The audit log: read within scope (entries of no community: callers of every
-- community); written by the triggers and refusals of any request.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_read ON audit_log FOR SELECT TO sc_api USING (sc_sees(community_id));
CREATE POLICY sc_write ON audit_log FOR INSERT TO sc_api WITH CHECK (true);
