-- The rule engine evaluates replayed dead letters as it evaluates any message:
-- each worker remembers the last replay it has evaluated (dead_letter_replays.id).
-- NULL until the worker first starts with this version: it then starts from the
-- replays made from then on, not from the history before it.
ALTER TABLE alert_engine_progress ADD COLUMN replay_cursor bigint;
