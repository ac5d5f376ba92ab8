"""`python -m store`: look up stored transactions.

get TX                    one transaction's row as JSON (open ones too)
latest [--status S] [-n]  the latest N transactions, newest first
counts [--since] [--until]  stored transactions per status over a time range (ISO 8601)
open [--older-than 60s]   open transactions older than that, oldest first, with what each
                          lacks, and the types missing most among them (--json: rows)
diverted [--reason R] [-n]  records the writer diverted instead of storing, newest first:
                          where each was read (topic, partition, offset), why, its size
diverted-value TOPIC PARTITION OFFSET
                          one diverted record's bytes, as read, to standard output
migrate                   apply the schema in sql/migrations/
diff --live --against NAME  the transactions whose outcome differs between the live tables
                          and recompute NAME's (`stack recompute --into NAME`), over its
                          range: complete/expired, missing types, kind, amends; counts by
                          kind of change, then each one (--json: one object)

Open transactions are stored when the correlator runs with --progress-interval-s.
Exit codes: 0 done (diff: no outcome differs), 1 diff: some outcome differs, 2 an error
(the database away, no such transaction or recompute).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime

import psycopg

from store import db, diff

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/txn_correlator"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="store", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_URL, help="libpq connection URL")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("get")
    get.add_argument("transaction")
    latest = commands.add_parser("latest")
    latest.add_argument("--status", choices=["open", "complete", "expired"])
    latest.add_argument("-n", "--limit", type=int, default=10)
    counts = commands.add_parser("counts")
    counts.add_argument("--since", type=datetime.fromisoformat)
    counts.add_argument("--until", type=datetime.fromisoformat)
    stuck = commands.add_parser("open")
    stuck.add_argument("--older-than", type=duration_ms, default="60s", help="e.g. 90s, 5m, 1h")
    stuck.add_argument("-n", "--limit", type=int, default=20)
    stuck.add_argument("--json", action="store_true", help="the rows as JSON, one per line")
    diverted = commands.add_parser("diverted")
    diverted.add_argument("--reason", help="e.g. refused, not_json, not_an_output")
    diverted.add_argument("-n", "--limit", type=int, default=20)
    diverted.add_argument("--json", action="store_true", help="the rows as JSON, one per line")
    value = commands.add_parser("diverted-value")
    value.add_argument("topic")
    value.add_argument("partition", type=int)
    value.add_argument("offset", type=int)
    commands.add_parser("migrate")
    compare = commands.add_parser("diff")
    compare.add_argument(
        "--live", action="store_true", required=True, help="compare the live tables (public)"
    )
    compare.add_argument("--against", required=True, help="a recompute's name (--into)")
    compare.add_argument("--json", action="store_true", help="counts and every change as JSON")
    args = parser.parse_args(argv)

    try:
        if args.command == "get":
            print(db.to_json(db.get_transaction(args.database_url, args.transaction)))
        elif args.command == "latest":
            for row in db.latest(args.database_url, args.status, args.limit):
                print(db.to_json(row))
        elif args.command == "open":
            rows = db.open_transactions(args.database_url, args.older_than, args.limit)
            print("\n".join(db.to_json(r) for r in rows) if args.json else render_open(rows))
        elif args.command == "diverted":
            rows = db.diverted(args.database_url, args.reason, args.limit)
            print("\n".join(db.to_json(r) for r in rows) if args.json else render_diverted(rows))
        elif args.command == "diverted-value":
            raw = db.diverted_value(args.database_url, args.topic, args.partition, args.offset)
            sys.stdout.buffer.write(raw or b"")
        elif args.command == "diff":
            return show_diff(args.database_url, args.against, args.json)
        elif args.command == "counts":
            print(json.dumps(db.counts(args.database_url, args.since, args.until)))
        else:
            print(json.dumps({"applied": db.migrate(args.database_url)}))
    except (db.DatabaseUnavailable, db.UnknownTransaction, psycopg.Error) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


def show_diff(url: str, against: str, as_json: bool) -> int:
    """`store diff --live --against NAME`; exits 1 when any outcome differs (a check for
    scripts), 0 when none does."""
    try:
        schema = db.schema_name(against)
    except ValueError as error:
        raise db.UnknownTransaction(str(error)) from None
    from_ms, until_ms = db.recompute_range(url, schema)
    live = db.outcomes(url, "public", from_ms, until_ms)
    recomputed = db.outcomes(url, schema, from_ms, until_ms)
    found = diff.differences(live, recomputed)
    compared = len(live.keys() | recomputed.keys())
    if as_json:
        document = {
            "from_ms": from_ms,
            "until_ms": until_ms,
            "compared": compared,
            "differ": len(found),
            "counts": diff.counts(found),
            "changes": found,
        }
        print(json.dumps(document, sort_keys=True))
    else:
        print(diff.render(found, compared))
    return 1 if found else 0


def duration_ms(text: str) -> int:
    """`90`, `90s`, `5m`, `1h` -> milliseconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 5m or 1h")
    return int(float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]] * 1000)


def render_open(rows: list[dict], now_ms: int | None = None) -> str:
    """One line per open transaction, then the types that most of them lack."""
    if not rows:
        return "no open transaction that old"
    now_ms = now_ms or int(time.time() * 1000)
    lines = [
        f"{r['transaction']}  open {(now_ms - r['first_event_ms']) / 1000:.0f} s"
        f"  kind={r['kind'] or '-'}  has {','.join(r['present_types'])}"
        f"  missing {','.join(r['missing_types']) or '-'}"
        for r in rows
    ]
    ranking = ", ".join(f"{t} ({n} of {len(rows)})" for t, n in db.missing_ranking(rows))
    lines.append(f"missing most: {ranking}")
    return "\n".join(lines)


def render_diverted(rows: list[dict]) -> str:
    """One line per diverted record: where it is, why, how big."""
    if not rows:
        return "nothing diverted"
    return "\n".join(
        f"{r['topic']}/{r['partition']}/{r['offset']}  {r['reason']}  {r['bytes'] or 0:,} bytes"
        f"  {r['diverted_at']:%Y-%m-%d %H:%M:%S}  {r['detail'] or ''}"
        for r in rows
    )


if __name__ == "__main__":
    sys.exit(main())
