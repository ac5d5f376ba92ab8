-- The writer job's input: the correlator's committed output, keyed by where it was read.
-- Runs as its own Flink job (job/writer.py substitutes the ${...} options).

-- Both result topics and the progress topic, read with isolation.level=read_committed so
-- that only output of completed checkpoints (committed Kafka transactions) is ever stored.
-- The value stays raw bytes: whatever is on the topics reaches the writer's Python function
-- (job/storage.py decides where it goes), with the coordinates that find it again.
CREATE TEMPORARY TABLE emitted_records (
  `v`         BYTES,
  `topic`     STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset`    BIGINT METADATA VIRTUAL
) WITH (
${source_options}
);

-- Keyed by topic and partition (no Python runs before the shuffle): each partition's records
-- reach the writer in offset order, are buffered in its keyed state until they are in
-- PostgreSQL, and its offsets advance in order.
SELECT CONCAT(`topic`, '/', CAST(`partition` AS STRING)) AS `k`,
  CAST(ROW(`topic`, `partition`, `offset`, `v`) AS ROW<
    `topic` STRING, `partition` INT, `offset` BIGINT, `v` BYTES
  >) AS `record`
FROM emitted_records;
