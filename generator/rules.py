"""`python -m generator.rules FILE`: sends completeness rules to a running job.

FILE is a rules file (YAML or JSON, `job/rules.py` describes it). It is checked here as the
job checks it, then sent to the reference topic as one record (key `"@rules"`, value the
document as JSON). Every instance of the running job applies it if its `version` is above
the rules in force, keeps it in its broadcast state (so it survives restarts) and judges
new transactions by it, and open ones from their next part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from kafka import KafkaProducer

from job.clients import kafka_settings
from job.config import JobConfig
from job.rules import RULES_KEY, read_rules


def publish_rules(
    bootstrap_servers: str, document: dict, topic: str, kafka_properties: str = ""
) -> None:
    settings = kafka_settings(bootstrap_servers, kafka_properties)
    with KafkaProducer(**settings, acks="all") as producer:
        producer.send(
            topic, key=json.dumps(RULES_KEY).encode(), value=json.dumps(document).encode()
        )
        producer.flush()


def main(argv: list[str] | None = None) -> None:
    job = JobConfig()
    parser = argparse.ArgumentParser(
        prog="generator.rules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="rules file (YAML or JSON)")
    parser.add_argument("--bootstrap-servers", default=job.bootstrap_servers)
    parser.add_argument(
        "--kafka-properties",
        default="",
        help="the Kafka client properties file the job gets (SASL, TLS)",
    )
    parser.add_argument("--topic", default=job.reference_topic, help="the job's reference topic")
    parser.add_argument("--types", default=",".join(job.types), help="the job's types")
    args = parser.parse_args(argv)
    config = JobConfig(types=tuple(t for t in args.types.split(",") if t))
    try:
        rules = read_rules(args.file, config.option_rules(), config.types)
    except ValueError as error:
        parser.error(str(error))
    document = yaml.safe_load(args.file.read_text())
    publish_rules(args.bootstrap_servers, document, args.topic, args.kafka_properties)
    kinds = ", ".join(f"{k} {list(r.required)}" for k, r in rules.kinds.items())
    print(f"sent rules version {rules.version} to {args.topic}: {kinds or 'default only'}")


if __name__ == "__main__":
    main()
