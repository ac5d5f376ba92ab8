-- The writer job: committed output of the correlator -> PostgreSQL, one row per transaction.
-- Runs as its own Flink job (job/writer.py substitutes the ${...} options).

-- Both result topics and the progress topic, read with isolation.level=read_committed so
-- that only output of completed checkpoints (committed Kafka transactions) is ever stored.
CREATE TEMPORARY TABLE emitted_transactions (
  `v` STRING
) WITH (
${source_options}
);

-- Every record goes to the view `transaction_records` (migration 003), which upserts it into
-- `transactions` by precedence: a replay rewrites rows instead of duplicating them, an open
-- record never replaces a final one, and the row that amends most wins. No primary key
-- here: the connector then appends every record in order, where an upsert sink would keep
-- only the last record per transaction of each batch.
CREATE TEMPORARY TABLE stored_transactions (
  `transaction`      STRING,
  `status`           STRING,
  `present_types`    STRING,
  `missing_types`    STRING,
  `first_event_ms`   BIGINT,
  `last_event_ms`    BIGINT,
  `duration_ms`      BIGINT,
  `emitted_at_ms`    BIGINT,
  `kind`             STRING,
  `amends`           INT,
  `aggregate`        STRING
) WITH (
${sink_options}
);

INSERT INTO stored_transactions
SELECT
  JSON_VALUE(v, '$.transaction'),
  JSON_VALUE(v, '$.status'),
  JSON_QUERY(v, '$.types'),
  JSON_QUERY(v, '$.missing'),
  CAST(JSON_VALUE(v, '$.first_event_time') AS BIGINT),
  CAST(JSON_VALUE(v, '$.last_event_time') AS BIGINT),
  CAST(JSON_VALUE(v, '$.duration_ms') AS BIGINT),
  CAST(JSON_VALUE(v, '$.emitted_at') AS BIGINT),
  JSON_VALUE(v, '$.kind'),
  -- Late-policy amend: the table keeps the row that amends most (migration 002).
  COALESCE(CAST(JSON_VALUE(v, '$.amends') AS INT), 0),
  v
FROM emitted_transactions
-- Only the correlator's own records: anything else would fail the NOT NULL columns and
-- stop the writer, so it is left out (and stays on the topic for inspection). The progress
-- topic's tombstones (a closed transaction's record deleted) have no value: left out too.
WHERE JSON_VALUE(v, '$.transaction') IS NOT NULL
  AND JSON_VALUE(v, '$.status') IN ('open', 'complete', 'expired')
  AND JSON_VALUE(v, '$.first_event_time') IS NOT NULL;
