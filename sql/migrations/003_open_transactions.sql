-- Open transactions (job option --progress-interval-s): the job reports each open
-- transaction on its progress topic, and the writer stores it as a row with status 'open'
-- until the transaction's final record (complete or expired) replaces it. A final row is
-- never replaced by an open one, whatever order the writer reads the topics in (they are
-- different topics, read in no fixed order between them) and also when it replays them.
ALTER TABLE transactions DROP CONSTRAINT IF EXISTS transactions_status_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_status_check
    CHECK (status IN ('open', 'complete', 'expired'));

-- "open transactions older than N seconds" reads this.
CREATE INDEX IF NOT EXISTS transactions_open_first_event
    ON transactions (first_event_ms) WHERE status = 'open';

-- What the writer inserts into: every record it reads, in the order it reads them, each
-- applied here by precedence. The writer's sink appends (no primary key in Flink), so the
-- JDBC connector's batch keeps every record; an upsert sink keeps only the last one per key
-- of each batch, which could be an open record read after the final one.
CREATE OR REPLACE VIEW transaction_records AS
    SELECT "transaction", status, present_types, missing_types, first_event_ms, last_event_ms,
           duration_ms, emitted_at_ms, kind, amends, aggregate
    FROM transactions;

CREATE OR REPLACE FUNCTION transaction_records_apply() RETURNS trigger AS $$
BEGIN
    INSERT INTO transactions ("transaction", status, present_types, missing_types,
                              first_event_ms, last_event_ms, duration_ms, emitted_at_ms,
                              kind, amends, aggregate)
    VALUES (NEW."transaction", NEW.status, NEW.present_types, NEW.missing_types,
            NEW.first_event_ms, NEW.last_event_ms, NEW.duration_ms, NEW.emitted_at_ms,
            NEW.kind, COALESCE(NEW.amends, 0), NEW.aggregate)
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
        aggregate = EXCLUDED.aggregate
    -- An open record replaces only an open row: once final, a transaction stays final.
    -- Between final records the row that amends most wins (the trigger of migration 002).
    WHERE EXCLUDED.status <> 'open' OR transactions.status = 'open';
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS transaction_records_apply ON transaction_records;
CREATE TRIGGER transaction_records_apply
    INSTEAD OF INSERT ON transaction_records
    FOR EACH ROW EXECUTE FUNCTION transaction_records_apply();
