"""`python -m stack COMMAND`: the local platform (Kafka, Flink, PostgreSQL) and the jobs.

up             fetch jars, start what is not running of Kafka (KRaft), PostgreSQL, Flink
               (JobManager, missing TaskManager processes) and Prometheus (scraping
               Flink's reporters for deploy/grafana's dashboard), create topics and table,
               and the supervisor: a background process that replaces any TaskManager that
               dies, as Kubernetes would (--no-supervise: none; `down` stops it)
demo           up, submit both jobs, send transactions, print what comes out and is stored
submit         submit the correlator
submit-writer  submit the writer; arguments after `--` go to it (`job/writer.py -h`)
down           stop the supervisor, Prometheus, Flink, PostgreSQL and Kafka (data stays in
               .run/ until you delete it)
status         health of both jobs (state, restarts, last exception, checkpoints), the
               TaskManagers, how far the writer is behind the output topics, what it
               diverted, the correlator's input rate, counters, consumer lag, the types
               missing and late most, the oldest open transaction [--json]; exits 1 when
               anything is unhealthy (the problems are listed first)
supervise      the supervisor in the foreground (what `up` starts in the background)
jars           fetch the jars from Maven Central only

With --hosts, `up`, `down`, `submit` and `status` act on a cluster across five hosts of
this machine (network namespaces, needs root): Kafka, ZooKeeper and an S3 server on one,
two JobManagers in high-availability mode, two TaskManagers (stack/hosts.py, and
docs/deployment.md, "Several hosts"). `up --hosts` also starts whatever a dead host ran.

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
from stack import demo, jars, netns, status
from stack.flink import FlinkCluster
from stack.hosts import ROLES, TASKMANAGERS, HostsCluster
from stack.kafka import KafkaBroker, create_job_topics
from stack.postgres import PostgresServer
from stack.prometheus import PrometheusServer
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
        "command",
        choices=["up", "demo", "submit", "submit-writer", "down", "status", "supervise", "jars"],
    )
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--rest-port", type=int, default=8081, help="Flink web UI / REST port")
    parser.add_argument("--rpc-port", type=int, default=6123, help="Flink JobManager RPC port")
    parser.add_argument("--postgres-port", type=int, default=5432)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument(
        "--taskmanagers", type=int, default=2, help="one slot each: correlator + writer"
    )
    parser.add_argument("--partitions", type=int, default=3, help="partitions per input topic")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument(
        "--no-supervise", action="store_true", help="up: no supervisor for the TaskManagers"
    )
    parser.add_argument(
        "--hosts", action="store_true", help="up, down, submit, status: the cluster of hosts"
    )
    # Everything after `--` is the job's (argparse would not take it after other options).
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.job_args = argv[split + 1 :]

    if args.hosts:
        hosts(args)
        return
    broker = KafkaBroker(port=args.kafka_port, controller_port=args.kafka_port + 1)
    cluster = FlinkCluster(
        rest_port=args.rest_port, rpc_port=args.rpc_port, taskmanagers=args.taskmanagers
    )
    database = PostgresServer(port=args.postgres_port)
    prometheus = PrometheusServer(port=args.prometheus_port)
    if args.command == "supervise":
        print(f"supervising {cluster.taskmanagers} TaskManager(s) of {cluster.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            cluster.supervise()
        return
    if args.command == "submit-writer":
        config = parse_args(["--database-url", database.url, *args.job_args], WriterConfig)
        print(f"submitted job {submit_writer(cluster, config)}; web UI on {cluster.url}")
        return
    # One parsed configuration of the correlator for every other command.
    job = parse_args(["--bootstrap-servers", broker.bootstrap, *args.job_args])
    if args.command == "jars":
        jars.fetch_all()
    elif args.command in ("up", "demo"):
        up(broker, cluster, database, prometheus, job, args.partitions)
        if not args.no_supervise and cluster.start_supervisor():
            print(f"supervisor started (log: {cluster.supervisor_log})")
        if args.command == "demo":
            demo.run(broker, cluster, database)
    elif args.command == "submit":
        print(f"submitted job {submit_correlator(cluster, job)}; web UI on {cluster.url}")
    elif args.command == "down":
        prometheus.stop()
        cluster.stop()
        database.stop()
        broker.stop()
        print("stopped the supervisor, Prometheus, Flink, PostgreSQL and Kafka")
    else:
        writer = WriterConfig.for_job(job, database_url=database.url)
        report = status.collect(status.Product(cluster, job, writer, cluster.taskmanagers))
        report["kafka"] = broker.bootstrap if broker.running() else None
        report["postgres"] = database.url if database.running() else None
        if report.get("counters") is not None:
            report["open"] = report["postgres"] and status.open_transactions(database.url)
        print(json.dumps(report, indent=2) if args.json else status.render(report))
        sys.exit(0 if report["healthy"] else 1)


def hosts(args) -> None:
    """The commands on the cluster across hosts (stack/hosts.py)."""
    cluster = HostsCluster()
    if args.command not in ("up", "down", "submit", "status"):
        raise SystemExit(f"stack {args.command} has no --hosts form")
    if args.command == "down":
        cluster.down()
        print(f"stopped every process on {len(cluster.network.hosts)} hosts; hosts removed")
        return
    reason = netns.available()
    if reason is not None:
        raise SystemExit(f"several hosts need network namespaces: {reason}")
    job = parse_args(["--bootstrap-servers", cluster.bootstrap, *args.job_args])
    if args.command == "up":
        jars.fetch_all()
        started = cluster.up(job, args.partitions)
        print(f"started {started} Flink process(es) on the hosts")
        for host in cluster.network.hosts:
            print(f"  {host.name} {host.address}: {ROLES[host.name]}")
        print(f"Kafka on {cluster.bootstrap}, S3 on {cluster.s3.endpoint}, web UI {cluster.url}")
    elif args.command == "submit":
        print(f"submitted job {submit_correlator(cluster, job)}; web UI on {cluster.url}")
    else:
        # The hosts run the correlator only (no PostgreSQL, no writer).
        report = status.collect(status.Product(cluster, job, None, len(TASKMANAGERS)))
        report["leader"] = cluster.leader()
        text = status.render(report) + f"\nleading JobManager: {report['leader']}"
        print(json.dumps(report, indent=2) if args.json else text)
        sys.exit(0 if report["healthy"] else 1)


def up(
    broker: KafkaBroker,
    cluster: FlinkCluster,
    database: PostgresServer,
    prometheus: PrometheusServer,
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
    if prometheus.installed():
        prometheus.start()
        print(f"Prometheus on {prometheus.url} (dashboard: deploy/grafana/dashboards/)")
    else:
        print("Prometheus not installed (bin/setup installs it): no metrics history")


if __name__ == "__main__":
    main()
