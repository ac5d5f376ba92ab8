-- Storage is total (the writer job, job/writer.py and job/storage.py): every record the
-- writer reads is a row of `transactions`, a diverted record below, or a progress tombstone.

-- PostgreSQL's jsonb holds no U+0000. A record with one (in a log line, say) is stored with
-- each U+0000 read as U+FFFD in `aggregate`, and exactly as emitted here; null otherwise.
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS aggregate_text TEXT;

-- Records that are no row: not JSON, not an output of the correlator, an id the key cannot
-- hold, or a row PostgreSQL refused (`detail` has its SQLSTATE and message). The bytes are
-- kept as they were read, and the coordinates find the record again on its topic. A replay
-- diverts a record once.
CREATE TABLE IF NOT EXISTS diverted_records (
    topic        TEXT NOT NULL,
    "partition"  INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT,
    value        BYTEA,
    diverted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", "offset")
);
CREATE INDEX IF NOT EXISTS diverted_records_diverted_at ON diverted_records (diverted_at);

-- How far each writer (its consumer group) got: the last offset of each partition it
-- stored, committed with the rows. A fresh start of the writer resumes after it, and
-- `stack status` counts the records behind it.
CREATE TABLE IF NOT EXISTS writer_offsets (
    group_id     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    "partition"  INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    stored_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, "partition")
);

-- The writer's view and its trigger, with the exact text beside the aggregate.
DROP TRIGGER IF EXISTS transaction_records_apply ON transaction_records;
DROP VIEW IF EXISTS transaction_records;
CREATE VIEW transaction_records AS
    SELECT "transaction", status, present_types, missing_types, first_event_ms, last_event_ms,
           duration_ms, emitted_at_ms, kind, amends, aggregate, aggregate_text
    FROM transactions;

CREATE OR REPLACE FUNCTION transaction_records_apply() RETURNS trigger AS $$
BEGIN
    INSERT INTO transactions ("transaction", status, present_types, missing_types,
                              first_event_ms, last_event_ms, duration_ms, emitted_at_ms,
                              kind, amends, aggregate, aggregate_text)
    VALUES (NEW."transaction", NEW.status, NEW.present_types, NEW.missing_types,
            NEW.first_event_ms, NEW.last_event_ms, NEW.duration_ms, NEW.emitted_at_ms,
            NEW.kind, COALESCE(NEW.amends, 0), NEW.aggregate, NEW.aggregate_text)
    ON CONFLICT ("transaction") DO UPDATE SET
        status = EXCLUDED.status,
        present_types = EXCLUDED.present_types,
        missing_types = EXCLUDED.missing_types,
        first_event_ms = EXCLUDED.first_event_ms,
        last_event_ms = EXCLUDED.last_event_ms,
        duration_ms = EXCLUDED.duration_ms,
        emitted_at_ms = EXCLUDED.emitted_at_ms,
        kind = EXCLUDED.kind,
        amends = EXCLUDED.amends,
        aggregate = EXCLUDED.aggregate,
        aggregate_text = EXCLUDED.aggregate_text
    -- An open record replaces only an open row: once final, a transaction stays final.
    -- Between final records the row that amends most wins (the trigger of migration 002).
    WHERE EXCLUDED.status <> 'open' OR transactions.status = 'open';
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER transaction_records_apply
    INSTEAD OF INSERT ON transaction_records
    FOR EACH ROW EXECUTE FUNCTION transaction_records_apply();
