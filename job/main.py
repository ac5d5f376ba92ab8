"""Entry point for `flink run -py job/main.py [options]` and for local runs (`--help`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# `flink run -py` puts this file's folder on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from job.config import parse_args  # noqa: E402
from job.pipeline import run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.info("txn-correlator effective configuration: %s", config.describe())
    run(config)


if __name__ == "__main__":
    main()
