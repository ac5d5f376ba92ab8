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
topics         create the job's topics (`JobConfig.topics()`) on the broker its options name
check          check the job's options, broker, topics and transaction timeout; one line
               per problem, exit code 2 (`submit` runs the same checks first)
savepoint      take a savepoint of the running job (the correlator; --writer: the writer)
stop           stop the running job; with --savepoint, after a savepoint
cancel         cancel the running job, no savepoint
savepoints     the savepoints in the cluster's folder, newest first, with the code each
               came from
jars           fetch the jars from Maven Central only
recompute      --from T1 --until T2 [--into NAME]: the correlator (with the options after
               --, e.g. another --rules-file) as a bounded job over that range of the type
               topics, into topics and a PostgreSQL schema named NAME; the live job, its
               topics and tables are untouched. Then `python -m store diff --live --against
               NAME` (docs/operations.md, "Recompute a time range")

`submit --from-savepoint PATH` (and `submit-writer --from-savepoint PATH`) resumes from a
savepoint or a retained checkpoint; `--allow-non-restored-state` when the job no longer has
an operator whose state the savepoint holds.

With --hosts, `up`, `down`, `submit`, `check`, `topics`, `status`, `savepoint`, `stop`,
`cancel` and `savepoints` act on a cluster across five hosts of
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
import logging
import shutil
import signal
import sys

from job.config import JobConfig, WriterConfig, build_parser, parse_args
from stack import demo, jars, lifecycle, netns, preflight, recompute, status
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
    # The commands say what failed, in one line; the Kafka client's own retries stay quiet.
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    parser = argparse.ArgumentParser(
        prog="stack",
        description=__doc__,
        usage="%(prog)s [options] COMMAND [-- the correlator's options]",
        epilog="the correlator's options (after --):\n" + build_parser().format_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=[
            "up",
            "demo",
            "submit",
            "submit-writer",
            "down",
            "status",
            "supervise",
            "topics",
            "check",
            "savepoint",
            "stop",
            "cancel",
            "savepoints",
            "jars",
            "recompute",
        ],  # fmt: skip
    )
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--rest-port", type=int, default=8081, help="Flink web UI / REST port")
    parser.add_argument(
        "--rest-address", default="127.0.0.1",
        help="the Flink cluster's REST address: this machine's, or any other cluster's",
    )  # fmt: skip
    parser.add_argument("--rpc-port", type=int, default=6123, help="Flink JobManager RPC port")
    parser.add_argument("--postgres-port", type=int, default=5432)
    parser.add_argument(
        "--database-url",
        help="status, submit-writer: the product's PostgreSQL (libpq URL; default: the local "
        "one on --postgres-port); its password from TXN_DB_PASSWORD or PGPASSWORD",
    )
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
        "--purge", action="store_true",
        help="down: then delete the services' data (topics, rows, checkpoints, logs)",
    )  # fmt: skip
    parser.add_argument(
        "--hosts", action="store_true", help="up, down, submit, status: the cluster of hosts"
    )
    parser.add_argument("--savepoint", action="store_true", help="stop: after a savepoint")
    parser.add_argument("--from-savepoint", metavar="PATH", help="submit: resume from it")
    parser.add_argument(
        "--allow-non-restored-state", action="store_true",
        help="submit --from-savepoint: skip state of operators the job no longer has",
    )  # fmt: skip
    parser.add_argument(
        "--writer", action="store_true", help="savepoint, stop, cancel: the writer's job"
    )
    parser.add_argument(
        "--from", dest="from_ms", type=recompute.instant_ms, metavar="T1",
        help="recompute: the range's start, ISO 8601 (UTC unless a zone is given)",
    )  # fmt: skip
    parser.add_argument(
        "--until", dest="until_ms", type=recompute.instant_ms, metavar="T2",
        help="recompute: the range's end (exclusive)",
    )  # fmt: skip
    parser.add_argument(
        "--into", metavar="NAME", help="recompute: the name of its topics and schema "
        "(default recompute_<UTC time>)",
    )  # fmt: skip
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
        rest_port=args.rest_port, rpc_port=args.rpc_port, taskmanagers=args.taskmanagers,
        rest_address=args.rest_address,
    )  # fmt: skip
    database = PostgresServer(port=args.postgres_port)
    database_url = args.database_url or database.url
    prometheus = PrometheusServer(port=args.prometheus_port, taskmanagers=args.taskmanagers)
    if args.command == "supervise":
        print(f"supervising {cluster.taskmanagers} TaskManager(s) of {cluster.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            cluster.supervise()
        return
    if args.command == "submit-writer":
        config = parse_args(["--database-url", database_url, *args.job_args], WriterConfig)
        job_id = submit_writer(cluster, config, args.from_savepoint, args.allow_non_restored_state)
        print(f"submitted job {job_id}; web UI on {cluster.url}")
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
    elif args.command in ("check", "submit"):
        found = preflight.problems(job)
        for problem in found:
            print(f"stack {args.command}: {problem}", file=sys.stderr)
        if found:
            sys.exit(2)
        if args.command == "check":
            print(f"checked: the options, {job.bootstrap_servers}, {len(job.topics())} topics")
            return
        job_id = submit_correlator(
            cluster, job, args.from_savepoint,
            allow_non_restored_state=args.allow_non_restored_state,
        )  # fmt: skip
        print(f"submitted job {job_id}; web UI on {cluster.url}")
    elif args.command == "recompute":
        recompute_command(args, job, database_url)
    elif args.command == "topics":
        created = create_job_topics(job, args.partitions)
        print(f"created {len(created)} topic(s) on {job.bootstrap_servers}: {', '.join(created)}")
    elif args.command in ("savepoint", "stop", "cancel", "savepoints"):
        lifecycle_command(args, cluster, job)
    elif args.command == "down":
        prometheus.stop()
        cluster.stop()
        database.stop()
        broker.stop()
        print("stopped the supervisor, Prometheus, Flink, PostgreSQL and Kafka")
        if args.purge:
            database.purge()
            for home in (prometheus.home, cluster.home, broker.home):
                shutil.rmtree(home, ignore_errors=True)
            print("deleted their data")
    else:
        writer = WriterConfig.for_job(job, database_url=database_url)
        alerts = prometheus if prometheus.running() else None
        product = status.Product(cluster, job, writer, cluster.taskmanagers, alerts)
        report = status.collect(product)
        if report.get("counters") is not None:
            report["open"] = status.open_transactions(database_url)
        print(json.dumps(report, indent=2) if args.json else status.render(report))
        sys.exit(0 if report["healthy"] else 1)


def recompute_command(args, job: JobConfig, database_url: str) -> None:
    """`stack recompute`: stack/recompute.py, then one line per figure of its summary."""
    if args.from_ms is None or args.until_ms is None:
        raise SystemExit("stack recompute: say --from T1 --until T2 (ISO 8601)")
    try:
        plan = recompute.plan(
            job, args.from_ms, args.until_ms, args.into or recompute.default_name()
        )
    except ValueError as error:
        raise SystemExit(f"stack recompute: {error}") from None
    writer = WriterConfig()
    print(
        f"recomputing {plan.name}: records from {plan.job.read_from_ms} to "
        f"{plan.job.read_until_ms} (epoch ms: the range and a transaction's life around it)"
    )
    try:
        summary = recompute.run(
            plan,
            database_url,
            writer.database_user,
            recompute.password_for(writer.database_password_env),
        )
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"stack recompute: {error}") from None
    for key, value in summary.items():
        print(f"  {key}: {value}")
    print(f"compare: python -m store diff --live --against {plan.name}")


def lifecycle_command(args, cluster: FlinkCluster | HostsCluster, job: JobConfig) -> None:
    """savepoint, stop [--savepoint], cancel, savepoints: stack/lifecycle.py. Savepoints go
    to the cluster's savepoint folder (on the hosts, its bucket in S3)."""
    if args.command == "savepoints":
        print(lifecycle.render(lifecycle.listing(cluster.savepoints)))
        return
    name = WriterConfig.for_job(job).job_name if args.writer else job.job_name
    job_id = lifecycle.running_job(cluster.api, name)
    if args.command == "cancel":
        cluster.api.cancel(job_id)
        print(f"cancelled {name} ({job_id})")
    elif args.command == "stop" and not args.savepoint:
        # Flink stops a job only after a savepoint; without one, it is a cancel.
        raise SystemExit("stack stop: say --savepoint (or `stack cancel`, with no savepoint)")
    else:
        stop = args.command == "stop"
        path = lifecycle.take(cluster.api, job_id, name, cluster.savepoints, stop=stop)
        print(f"{'stopped ' + name + ' after a ' if stop else ''}savepoint: {path}")


def hosts(args) -> None:
    """The commands on the cluster across hosts (stack/hosts.py)."""
    cluster = HostsCluster()
    if args.command not in ("up", "down", "submit", "check", "topics", "status", "savepoint",
                            "stop", "cancel", "savepoints"):  # fmt: skip
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
    elif args.command in ("check", "submit"):
        found = preflight.problems(job)
        for problem in found:
            print(f"stack {args.command}: {problem}", file=sys.stderr)
        if found:
            sys.exit(2)
        if args.command == "check":
            print(f"checked: the options, {job.bootstrap_servers}, {len(job.topics())} topics")
            return
        job_id = submit_correlator(
            cluster, job, args.from_savepoint,
            allow_non_restored_state=args.allow_non_restored_state,
        )  # fmt: skip
        print(f"submitted job {job_id}; web UI on {cluster.url}")
    elif args.command == "topics":
        created = create_job_topics(job, args.partitions)
        print(f"created {len(created)} topic(s) on {job.bootstrap_servers}: {', '.join(created)}")
    elif args.command in ("savepoint", "stop", "cancel", "savepoints"):
        lifecycle_command(args, cluster, job)
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
    create_job_topics(job, partitions)
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
