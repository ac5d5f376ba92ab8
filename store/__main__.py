"""`python -m store`: look up stored transactions.

get TX                    one transaction's row as JSON
latest [--status S] [-n]  the latest N transactions, newest first
counts [--since] [--until]  stored transactions per status over a time range (ISO 8601)
migrate                   apply the schema in sql/migrations/
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from store import db

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
    latest.add_argument("--status", choices=["complete", "expired"])
    latest.add_argument("-n", "--limit", type=int, default=10)
    counts = commands.add_parser("counts")
    counts.add_argument("--since", type=datetime.fromisoformat)
    counts.add_argument("--until", type=datetime.fromisoformat)
    commands.add_parser("migrate")
    args = parser.parse_args(argv)

    try:
        if args.command == "get":
            print(db.to_json(db.get_transaction(args.database_url, args.transaction)))
        elif args.command == "latest":
            for row in db.latest(args.database_url, args.status, args.limit):
                print(db.to_json(row))
        elif args.command == "counts":
            print(json.dumps(db.counts(args.database_url, args.since, args.until)))
        else:
            print(json.dumps({"applied": db.migrate(args.database_url)}))
    except (db.DatabaseUnavailable, db.UnknownTransaction) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
