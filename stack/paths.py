"""Where the local platform keeps its downloads and its running state.

Everything here lives under the repository in folders ignored by git, so a fresh clone
starts clean and `bin/stop` plus `rm -rf .cache .run` returns the machine to nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyflink

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
RUN = ROOT / ".run"
JARS = CACHE / "jars"
FLINK_CONF = ROOT / "flink-conf"
FLINK_HOME = Path(pyflink.__file__).resolve().parent
PYTHON = Path(sys.executable)


def path_with_venv() -> str:
    """`$PATH` with this venv's bin first, for every Flink process the platform starts: the
    Python workers run the `python` PATH finds, and in thread mode a TaskManager embeds it
    whatever `python.executable` says (with the system's, a minicluster failed with `No
    module named 'pemja'`). Only this venv's has PyFlink and PEMJA."""
    return f"{PYTHON.parent}{os.pathsep}{os.environ.get('PATH', '')}"
