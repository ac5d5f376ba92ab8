"""`python -m stack COMMAND`: the local platform (Kafka, Flink, PostgreSQL) and the jobs.

up             fetch jars, start what is not running of Kafka (KRaft), PostgreSQL and Flink
               (JobManager, missing TaskManager processes), create topics and table;
               with --supervise, then stay in the foreground and restart TaskManagers that
               crash, as Kubernetes would (Ctrl-C ends it; the cluster keeps running)
demo           up, submit both jobs, send transactions, print what comes out and is stored
submit         submit the correlator
submit-writer  submit the writer; arguments after `--` go to it (`job/writer.py -h`)
down           stop Flink, PostgreSQL and Kafka (data stays in .run/ until you delete it)
status         job state, checkpoints, input rate, counters, consumer lag [--json]
jars           fetch the jars from Maven Central only

The correlator's options go after `--`, once, and every command follows them: `up` creates
the topics they name, `submit` submits the job with them, `status` watches that job, its
types and its consumer group. For example, a sixth type:
  python -m stack up -- --types TypeA,TypeB,TypeC,TypeD,TypeE,TypeF
  python -m stack submit -- --types TypeA,TypeB,TypeC,TypeD,TypeE,TypeF
  python -m stack status -- --types TypeA,TypeB,TypeC,TypeD,TypeE,TypeF
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys

from job.config import JobConfig, WriterConfig, build_parser, parse_args
from stack import demo, jars, status
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker, create_job_topics
from stack.postgres import PostgresServer
from stack.submit import submit_correlator, submit_writer
from store import db


def main(argv: list[str] | None = None) -> None:
    # SIGTERM ends a supervisor like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parser = argparse.ArgumentParser(
        prog="stack",
        description=__doc__,
        usage="%(prog)s [options] COMMAND [-- the correlator's options]",
        epilog="the correlator's options (after --):\n" + build_parser().format_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=["up", "demo", "submit", "submit-writer", "down", "status", "jars"]
    )
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--rest-port", type=int, default=8081, help="Flink web UI / REST port")
    parser.add_argument("--rpc-port", type=int, default=6123, help="Flink JobManager RPC port")
    parser.add_argument("--postgres-port", type=int, default=5432)
    parser.add_argument(
        "--taskmanagers", type=int, default=2, help="one slot each: correlator + writer"
    )
    parser.add_argument("--partitions", type=int, default=3, help="partitions per input topic")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument(
        "--supervise", action="store_true", help="up: then restart crashed TaskManagers"
    )
    # Everything after `--` is the job's (argparse would not take it after other options).
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.job_args = argv[split + 1 :]

    broker = KafkaBroker(port=args.kafka_port, controller_port=args.kafka_port + 1)
    cluster = FlinkCluster(
        rest_port=args.rest_port, rpc_port=args.rpc_port, taskmanagers=args.taskmanagers
    )
    database = PostgresServer(port=args.postgres_port)
    if args.command == "submit-writer":
        config = parse_args(["--database-url", database.jdbc_url, *args.job_args], WriterConfig)
        print(f"submitted job {submit_writer(cluster, config)}; web UI on {cluster.url}")
        return
    # One parsed configuration of the correlator for every other command.
    job = parse_args(["--bootstrap-servers", broker.bootstrap, *args.job_args])
    if args.command == "jars":
        jars.fetch_all()
    elif args.command in ("up", "demo"):
        up(broker, cluster, database, job, args.partitions)
        if args.command == "demo":
            demo.run(broker, cluster, database)
        elif args.supervise:
            print(f"supervising {cluster.taskmanagers} TaskManager(s); Ctrl-C ends", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                cluster.supervise()
    elif args.command == "submit":
        print(f"submitted job {submit_correlator(cluster, job)}; web UI on {cluster.url}")
    elif args.command == "down":
        cluster.stop()
        database.stop()
        broker.stop()
        print("stopped Flink, PostgreSQL and Kafka")
    else:
        report = status.collect(cluster, job)
        report["kafka"] = broker.bootstrap if broker.running() else None
        report["postgres"] = database.url if database.running() else None
        print(json.dumps(report, indent=2) if args.json else status.render(report))


def up(
    broker: KafkaBroker,
    cluster: FlinkCluster,
    database: PostgresServer,
    job: JobConfig,
    partitions: int,
) -> None:
    jars.fetch_all()
    broker.start()
    create_job_topics(broker, job, partitions)
    print(f"Kafka broker on {broker.bootstrap}")
    database.start()
    db.migrate(database.url)
    print(f"PostgreSQL on {database.url}")
    cluster.start()
    print(f"Flink web UI on {cluster.url}")


if __name__ == "__main__":
    main()
