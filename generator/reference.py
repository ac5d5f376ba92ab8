"""`python -m generator.reference FILE`: loads reference data per type into its topic.

FILE (YAML or JSON) maps each type to its fields, for example

    TypeA: {service: orders, team: checkout, duration_slo_ms: 5000}

Each type becomes one record on the compacted reference topic (key: the JSON-quoted type,
value: the fields as JSON); the running job picks it up for later aggregates. `--delete
TYPE` writes a tombstone that removes a type's entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from kafka import KafkaProducer

from job.clients import kafka_settings
from job.config import JobConfig

DEFAULT_TOPIC = JobConfig().reference_topic  # the job's reference topic


def read_reference(path: Path) -> dict[str, dict]:
    data = yaml.safe_load(path.read_text())  # JSON is YAML too
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of type -> mapping of fields")
    return {str(k): v for k, v in data.items()}


def publish(
    bootstrap_servers: str,
    reference: dict[str, dict],
    topic: str = DEFAULT_TOPIC,
    deletes: tuple[str, ...] = (),
    kafka_properties: str = "",
) -> int:
    producer = KafkaProducer(**kafka_settings(bootstrap_servers, kafka_properties), acks="all")
    try:
        for record_type, fields in reference.items():
            producer.send(
                topic, key=json.dumps(record_type).encode(), value=json.dumps(fields).encode()
            )
        for record_type in deletes:
            producer.send(topic, key=json.dumps(record_type).encode(), value=None)
        producer.flush()
    finally:
        producer.close()
    return len(reference) + len(deletes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="generator.reference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", type=Path, help="YAML or JSON reference file")
    parser.add_argument("--bootstrap-servers", default=JobConfig().bootstrap_servers)
    parser.add_argument(
        "--kafka-properties", default="",
        help="the Kafka client properties file the job gets (SASL, TLS)",
    )  # fmt: skip
    parser.add_argument("--topic", default=DEFAULT_TOPIC)
    parser.add_argument("--delete", action="append", default=[], metavar="TYPE")
    args = parser.parse_args(argv)
    reference = read_reference(args.file) if args.file else {}
    count = publish(
        args.bootstrap_servers, reference, args.topic, tuple(args.delete), args.kafka_properties
    )
    print(f"wrote {count} reference records to {args.topic}")


if __name__ == "__main__":
    main()
