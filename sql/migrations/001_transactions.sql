-- One row per transaction the job emitted, complete or expired. The writer job upserts by
-- primary key, so replaying the output topics rewrites rows instead of adding them.
CREATE TABLE IF NOT EXISTS transactions (
    "transaction"     TEXT PRIMARY KEY,
    status            TEXT NOT NULL CHECK (status IN ('complete', 'expired')),
    present_types     JSONB NOT NULL,      -- JSON array of the types that arrived
    missing_types     JSONB NOT NULL,      -- JSON array of the types that never did
    first_event_ms    BIGINT NOT NULL,     -- epoch milliseconds, as in the output record
    last_event_ms     BIGINT NOT NULL,
    duration_ms       BIGINT NOT NULL,
    emitted_at_ms     BIGINT NOT NULL,
    aggregate         JSONB NOT NULL,      -- the whole output record
    -- Derived here: no time zone is involved on the way in, and the writer stays simple.
    parts             INTEGER GENERATED ALWAYS AS (jsonb_array_length(present_types)) STORED,
    first_event_time  TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(first_event_ms / 1000.0)) STORED,
    last_event_time   TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(last_event_ms / 1000.0)) STORED,
    emitted_at        TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(emitted_at_ms / 1000.0)) STORED
);

-- "latest N by status" and "counts per status over a time range" read these.
CREATE INDEX IF NOT EXISTS transactions_status_emitted_at
    ON transactions (status, emitted_at DESC);
CREATE INDEX IF NOT EXISTS transactions_emitted_at
    ON transactions (emitted_at);
