#!/usr/bin/env bash
# Makes the faust-streaming benchmark peer's venv, .cache/faust-venv, idempotently: installs
# bench/peers/requirements-faust.txt only when it changed since the last install (a stamp
# holds its sha256). Kept apart from .venv so faust's pins never meet the project's.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=.cache/faust-venv
requirements=bench/peers/requirements-faust.txt
python=$(command -v python3.11 || command -v python3)
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p .cache
  "$python" -m venv "$venv"
fi
stamp=$venv/.installed
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi
