-- Opening an alert is idempotent per (rule, subject, episode) (docs/scale-out.md).
-- The episode is the time the condition began (first_seen, from the device's
-- clock), which a redelivered or replayed message reproduces exactly: a batch
-- evaluated again after its alert was already resolved, by this worker after a
-- restart or by another after a takeover, meets this key and opens nothing.
-- Rows from before this migration keep a NULL key, which never conflicts.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS episode timestamptz;
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_per_episode
    ON alerts (rule_id, subject, episode);
