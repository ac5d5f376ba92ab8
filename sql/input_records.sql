-- The job's one Kafka source, over every type topic at once.
-- The value stays raw bytes so a malformed record reaches the parser, and from there the
-- dead-letter topic, exactly as it was sent. A record's type is its topic; event time is the
-- Kafka record timestamp unless the job is told to read a field of the value.
CREATE TEMPORARY TABLE input_records (
  `payload`    BYTES,
  `topic`      STRING METADATA VIRTUAL,
  `partition`  INT METADATA VIRTUAL,
  `offset`     BIGINT METADATA VIRTUAL,
  `kafka_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  `event_time` AS ${event_time},
  WATERMARK FOR `event_time` AS `event_time` - INTERVAL '${out_of_orderness}' SECOND
) WITH (
${options}
)
