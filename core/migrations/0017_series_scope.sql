-- Community isolation for the API's role on the TimescaleDB path's time series
-- (docs/security.md). Plain PostgreSQL has row-level security on readings,
-- device_events and the rollup tables since 0008, and nothing changes there.
-- TimescaleDB refuses ENABLE ROW LEVEL SECURITY on a hypertable with compression
-- ("operation not supported on hypertables that have columnstore enabled"; 2.28),
-- compression on a hypertable with it, and continuous aggregates over one.
--
-- So there sc_api loses its privileges on the series (which TimescaleDB carries to
-- every chunk, compressed chunk and materialisation table) and reads them through
-- security-barrier views of the same names in a schema named after the role: the
-- default search_path ("$user", public) finds sc_api.readings before
-- public.readings once a connection has SET ROLE sc_api, so the API's SQL is the
-- same on both paths. The views run as their owner and keep a row only when its
-- device is in the caller's communities (sc_sees, as the devices' own policy), the
-- check the plain path's policies make. A search_path without "$user" meets
-- "permission denied", never another community's rows.
DO $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM storage_config WHERE path = 'timescaledb') THEN
        RETURN;
    END IF;
    CREATE SCHEMA sc_api;
    GRANT USAGE ON SCHEMA sc_api TO sc_api;
    FOREACH t IN ARRAY ARRAY['readings', 'device_events', 'rollup_hourly', 'rollup_daily',
                             'readings_1h', 'readings_1d']
    LOOP
        EXECUTE format('REVOKE ALL ON public.%I FROM sc_api', t);
        -- security_barrier: no function of the caller's query sees a row before the
        -- check has passed it (leakproof comparisons still reach the indexes).
        EXECUTE format(
            'CREATE VIEW sc_api.%I WITH (security_barrier) AS SELECT s.* FROM public.%I AS s'
            ' WHERE EXISTS (SELECT 1 FROM public.devices AS d'
            ' WHERE d.id = s.device_id AND public.sc_sees(d.community_id))', t, t);
        EXECUTE format('GRANT SELECT ON sc_api.%I TO sc_api', t);
    END LOOP;
END $$;
