-- Reference data per type (service name, owning team, duration SLO, ...) from a compacted
-- topic: key = the type, value = a JSON object, a tombstone deletes the type's entry. The
-- job broadcasts it to every correlator instance. The watermark only lets this mostly
-- silent source go idle, so it never holds back the event time of the transactions.
CREATE TEMPORARY TABLE reference_services (
  `k`          BYTES,
  `v`          BYTES,
  `kafka_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  WATERMARK FOR `kafka_time` AS `kafka_time`
) WITH (
${options}
)
