-- The correlator's input, keyed in Java: every record with the transaction id it is routed
-- by, and its coordinates. Reading the id here, with Flink's JSON_VALUE, lets the job key the
-- stream without a Python key selector, so the correlator is the only Python that touches a
-- record (one busy Python thread per TaskManager). Records whose id cannot be read here
-- (malformed, no transaction) share the key '' and become dead letters in the correlator,
-- which parses every record strictly (job/records.py) and checks it against this key.
-- An id with a lone UTF-16 surrogate (JSON "\ud800") cannot cross into Python at all, so it
-- gets the key '' too (the parser refuses it as not_strict_json).
-- Event time goes to Python as epoch milliseconds (the session time zone is UTC, so EXTRACT
-- reads the instant); watermarks still come from the source, per partition.
SELECT `k`, CAST(ROW(`k`, `payload`, `topic`, `partition`, `offset`, `event_ms`) AS ROW<
    `k` STRING, `payload` BYTES, `topic` STRING, `partition` INT, `offset` BIGINT, `event_ms` BIGINT
  >) AS `record`
FROM (
  SELECT
    CASE WHEN REGEXP(`id`, '[\x{D800}-\x{DFFF}]') THEN '' ELSE `id` END AS `k`,
    `payload`, `topic`, `partition`, `offset`, `event_ms`
  FROM (
    SELECT
      COALESCE(JSON_VALUE(CAST(`payload` AS STRING), '$.transaction'), '') AS `id`,
      `payload`, `topic`, `partition`, `offset`,
      EXTRACT(EPOCH FROM `event_time`) * 1000 + EXTRACT(MILLISECOND FROM `event_time`) AS `event_ms`
    FROM input_records
  )
)
