-- The job's one Kafka sink. Each row names its topic (aggregated, expired, dead letter,
-- late), its key (the JSON-quoted transaction, as the original producers key their records)
-- and its value (a JSON document). Exactly-once: rows become visible to read_committed
-- consumers when the checkpoint that covers them completes.
CREATE TEMPORARY TABLE output_records (
  `topic` STRING METADATA,
  `k`     STRING,
  `v`     STRING
) WITH (
${options}
)
