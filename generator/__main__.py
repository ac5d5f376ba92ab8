"""`python -m generator`: sends transactions the way the original microservices do.

Scenarios from the original proof of concept:
  in-order   all types, one after another
  shuffled   all types in random order with random delays
  omitted    one or more types never sent (the job must expire these)
  load       N transactions at a target rate, with omission and shuffle probabilities
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from generator.producer import TransactionProducer
from generator.transactions import Transaction, load_plans, plan
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
    parser.add_argument("--types", default=",".join(job.types))
    parser.add_argument("--topic-prefix", default=job.topic_prefix)
    parser.add_argument("--count", type=int, default=1, help="transactions to send")
    parser.add_argument("--rate", type=float, default=1000.0, help="transactions per second")
    parser.add_argument("--omit-probability", type=float, default=0.1)
    parser.add_argument("--shuffle-probability", type=float, default=0.5)
    parser.add_argument("--max-delay", type=float, default=0.5, help="seconds, shuffled scenario")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def scenario_plans(args, types: list[str], rng: random.Random) -> list[Transaction]:
    if args.scenario == "in-order":
        return [plan(types, rng) for _ in range(args.count)]
    if args.scenario == "shuffled":
        return [plan(types, rng, shuffle=True) for _ in range(args.count)]
    if args.scenario == "omitted":
        return [plan(types, rng, omit=rng.randint(1, len(types) - 1)) for _ in range(args.count)]
    if args.scenario == "demo":
        return [plan(types, rng), plan(types, rng, shuffle=True), plan(types, rng, omit=2)]
    return load_plans(args.count, types, args.omit_probability, args.shuffle_probability, rng)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    types = [t for t in args.types.split(",") if t]
    rng = random.Random(args.seed)
    plans = scenario_plans(args, types, rng)
    delay = args.max_delay if args.scenario == "shuffled" else 0.0
    started = time.monotonic()
    with TransactionProducer(args.bootstrap_servers, args.topic_prefix, rng) as producer:
        producer.send_all(plans, rate=args.rate, max_delay=delay, progress=sys.stderr.isatty())
    summary = {
        "scenario": args.scenario,
        "transactions": len(plans),
        "complete": sum(p.complete for p in plans),
        "incomplete": sum(not p.complete for p in plans),
        "records": sum(len(p.sent_types) for p in plans),
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
