"""`python -m generator`: sends transactions the way the original microservices do.

Scenarios from the original proof of concept:
  in-order   all types, one after another
  shuffled   all types in random order with random delays
  omitted    one or more types never sent (the job must expire these)
  load       N transactions at a target rate, with omission and shuffle probabilities

With --kinds each transaction is of a kind chosen at random (in the job's --kind-field) and
sends the types its kind requires under the job's rules (--rules-file); with --late-after-s
the types an incomplete transaction left out follow that long after the rest, which a job
with --late-policy amend turns into amended partials.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter

from generator.producer import TransactionProducer
from generator.transactions import Transaction, load_plans, pick_kind, plan, record_value
from job.config import JobConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=["in-order", "shuffled", "omitted", "load", "demo"])
    job = JobConfig()  # the topics are the job's: its defaults are the generator's
    parser.add_argument("--bootstrap-servers", default=job.bootstrap_servers)
    parser.add_argument(
        "--kafka-properties",
        default="",
        help="the Kafka client properties file the job gets (SASL, TLS)",
    )
    parser.add_argument("--types", default=",".join(job.types))
    parser.add_argument("--topic-prefix", default=job.topic_prefix)
    parser.add_argument("--count", type=int, default=1, help="transactions to send")
    parser.add_argument("--rate", type=float, default=1000.0, help="transactions per second")
    parser.add_argument("--omit-probability", type=float, default=0.1)
    parser.add_argument("--shuffle-probability", type=float, default=0.5)
    parser.add_argument("--max-delay", type=float, default=0.5, help="seconds, shuffled scenario")
    parser.add_argument(
        "--kinds",
        default="",
        help="kinds of transaction to send, comma-separated, one chosen at random per "
        "transaction (empty: records name no kind)",
    )
    parser.add_argument(
        "--rules-file",
        default=job.rules_file,
        help="the job's rules file: a transaction of a kind sends its kind's required types "
        "(empty, or a kind it does not name: every type)",
    )
    parser.add_argument(
        "--late-after-s",
        type=float,
        default=0.0,
        help="send the types left out of incomplete transactions this long after the rest "
        "(0: never)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def kind_types(args, types: list[str]) -> dict[str | None, tuple[str, ...]]:
    """What each kind of `--kinds` sends: its required types under the job's rules (the
    rules file, as the job reads it); `{}` when no kind is asked for."""
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds:
        return {}
    rules = JobConfig(types=tuple(types), rules_file=args.rules_file).rules()
    return {kind: rules.rule(kind).required for kind in kinds}


def scenario_plans(args, types: list[str], rng: random.Random) -> list[Transaction]:
    kinds = kind_types(args, types)

    def one(shuffle: bool = False, omit: int | str = 0) -> Transaction:
        kind, sent = pick_kind(kinds, types, rng)
        if omit == "some":  # 1 .. all but one of the types this transaction sends
            omit = rng.randint(1, len(sent) - 1) if len(sent) > 1 else 0
        return plan(sent, rng, shuffle=shuffle, omit=min(omit, len(sent) - 1), kind=kind)

    if args.scenario == "in-order":
        return [one() for _ in range(args.count)]
    if args.scenario == "shuffled":
        return [one(shuffle=True) for _ in range(args.count)]
    if args.scenario == "omitted":
        return [one(omit="some") for _ in range(args.count)]
    if args.scenario == "demo":
        return [one(), one(shuffle=True), one(omit=2)]
    return load_plans(
        args.count, types, args.omit_probability, args.shuffle_probability, rng, kinds=kinds
    )


def send_late(producer: TransactionProducer, plans: list[Transaction], after_s: float) -> int:
    """The types each incomplete transaction left out, `after_s` after the rest."""
    time.sleep(after_s)
    late = 0
    for tx in plans:
        for record_type in tx.omitted:
            producer.send_record(record_type, record_value(tx.id, record_type, tx.kind))
            late += 1
    return late


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    types = [t for t in args.types.split(",") if t]
    rng = random.Random(args.seed)
    try:
        plans = scenario_plans(args, types, rng)
    except ValueError as error:  # a rules file the job would refuse too
        parser.error(str(error))
    delay = args.max_delay if args.scenario == "shuffled" else 0.0
    started = time.monotonic()
    with TransactionProducer(
        args.bootstrap_servers, args.topic_prefix, rng, args.kafka_properties
    ) as producer:
        producer.send_all(plans, rate=args.rate, max_delay=delay, progress=sys.stderr.isatty())
        late = send_late(producer, plans, args.late_after_s) if args.late_after_s else 0
    summary = {
        "scenario": args.scenario,
        "transactions": len(plans),
        "complete": sum(p.complete for p in plans),
        "incomplete": sum(not p.complete for p in plans),
        "records": sum(len(p.sent_types) for p in plans),
        "late_records": late,
        "kinds": dict(Counter(p.kind for p in plans if p.kind)) or None,
        "seconds": round(time.monotonic() - started, 2),
        "transaction_ids": [p.id for p in plans] if len(plans) <= 10 else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            if value is not None:
                print(f"{key:>16}: {value}")
    return summary


if __name__ == "__main__":
    main()
