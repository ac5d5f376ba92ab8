"""`python -m stack up|demo|submit|down|status|jars`: the local Kafka broker and Flink cluster.

up      fetch jars, start Kafka (KRaft) and Flink, create the topics
demo    up, submit the job, send transactions, print what comes out
submit  submit the job; arguments after `--` go to the job (see `python job/main.py -h`)
down    stop Flink and Kafka (data stays in .run/ until you delete it)
status  what is running
jars    fetch the jars from Maven Central only
"""

from __future__ import annotations

import argparse
import json

from job.config import JobConfig
from stack import demo, jars
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "demo", "submit", "down", "status", "jars"])
    parser.add_argument("job_args", nargs="*", help="job options for submit, after --")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--rest-port", type=int, default=8081, help="Flink web UI / REST port")
    parser.add_argument("--taskmanagers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=3, help="partitions per input topic")
    args = parser.parse_args(argv)

    broker = KafkaBroker(port=args.kafka_port, controller_port=args.kafka_port + 1)
    cluster = FlinkCluster(rest_port=args.rest_port, taskmanagers=args.taskmanagers)
    if args.command == "jars":
        jars.fetch_all()
    elif args.command in ("up", "demo"):
        up(broker, cluster, args.partitions)
        if args.command == "demo":
            demo.run(broker, cluster)
    elif args.command == "submit":
        job_args = ["--bootstrap-servers", broker.bootstrap, *args.job_args]
        print(f"submitted job {cluster.submit(job_args)}; web UI on {cluster.url}")
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


def up(broker: KafkaBroker, cluster: FlinkCluster, partitions: int) -> None:
    jars.fetch_all()
    broker.start()
    config = JobConfig(bootstrap_servers=broker.bootstrap)
    broker.create_topics(config.input_topics, partitions)
    broker.create_topics(config.output_topics)
    print(f"Kafka broker on {broker.bootstrap}")
    cluster.start()
    print(f"Flink web UI on {cluster.url}")


if __name__ == "__main__":
    main()
