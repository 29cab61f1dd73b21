-- Poison-proof pipeline (issue 13): bounded dead letters, their replays, and a
-- heartbeat per pipeline worker that /health reads.

-- Payloads past the payload limit are kept truncated; their real size is here
-- (NULL: the payload is whole, as in every row written before this column).
ALTER TABLE dead_letters ADD COLUMN payload_size integer;
-- Operators filter by reason (and device, the topic's fourth level) over a time range.
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);
CREATE INDEX dead_letters_device_idx ON dead_letters (split_part(topic, '/', 4), received_at);

-- Each replay of a dead letter through the pipeline and what came of it.
CREATE TABLE dead_letter_replays (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dead_letter_id bigint NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    replayed_at    timestamptz NOT NULL DEFAULT now(),
    -- stored: its content was committed; duplicate: it was already stored;
    -- rejected: refused again (reason, detail); truncated: the raw bytes were not kept whole.
    outcome        text NOT NULL CHECK (outcome IN ('stored', 'duplicate', 'rejected', 'truncated')),
    reason         text,
    detail         text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letter_replays_letter_idx ON dead_letter_replays (dead_letter_id, replayed_at);

-- Written every second by a healthy worker: 'running' while every pipeline thread
-- is alive, 'failed' the moment one dies, 'stopped' on a clean stop.
ALTER TABLE pipeline_metrics
    ADD COLUMN heartbeat_at timestamptz,
    ADD COLUMN heartbeat_s real,
    ADD COLUMN state text NOT NULL DEFAULT 'unknown'
        CHECK (state IN ('unknown', 'running', 'failed', 'stopped')),
    ADD COLUMN failure text NOT NULL DEFAULT '';
