-- Late-policy amend (job option --late-policy amend): an expired partial can be emitted
-- again with a part that arrived late, as the same transaction with `amends` counting up.
-- The writer upserts by transaction, but it reads the aggregated and the expired topic in
-- no fixed order between them, so the table keeps the row that amends most: an earlier
-- record arriving after a later one does not overwrite it.
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS amends INTEGER NOT NULL DEFAULT 0;
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS kind TEXT;

CREATE OR REPLACE FUNCTION transactions_keep_latest_amendment() RETURNS trigger AS $$
BEGIN
    IF NEW.amends < OLD.amends THEN
        RETURN NULL;  -- an older record of this transaction: keep the stored row
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS transactions_keep_latest_amendment ON transactions;
CREATE TRIGGER transactions_keep_latest_amendment
    BEFORE UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION transactions_keep_latest_amendment();
