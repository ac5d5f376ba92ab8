"""`python -m stack up|down|status|jars`: the local Kafka broker and Flink cluster."""

from __future__ import annotations

import argparse
import json

from job.config import JobConfig
from stack import jars
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "jars"])
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--rest-port", type=int, default=8081, help="Flink web UI / REST port")
    parser.add_argument("--taskmanagers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=3, help="partitions per input topic")
    args = parser.parse_args(argv)

    broker = KafkaBroker(port=args.kafka_port, controller_port=args.kafka_port + 1)
    cluster = FlinkCluster(rest_port=args.rest_port, taskmanagers=args.taskmanagers)
    if args.command == "jars":
        jars.fetch_all()
    elif args.command == "up":
        jars.fetch_all()
        broker.start()
        config = JobConfig(bootstrap_servers=broker.bootstrap)
        broker.create_topics(config.input_topics, args.partitions)
        broker.create_topics(config.output_topics)
        print(f"Kafka broker on {broker.bootstrap}")
        cluster.start()
        print(f"Flink web UI on {cluster.url}")
    elif args.command == "down":
        cluster.stop()
        broker.stop()
        print("stopped Flink and Kafka")
    else:
        status = {
            "kafka": broker.bootstrap if broker.running() else None,
            "flink": cluster.rest("/overview", quiet=True),
            "jobs": cluster.jobs() if cluster.rest("/overview", quiet=True) else [],
        }
        print(json.dumps(status, indent=2))


if __name__ == "__main__":
    main()
