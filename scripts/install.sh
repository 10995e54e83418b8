#!/usr/bin/env bash
# A working VENV (scripts/ensure-venv.sh) with the project installed in it, (re)installed when pyproject.toml is
# newer than the last install. Usage: install.sh PYTHON VENV
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=install
. scripts/lib.sh
PYTHON=${1:-python3}
VENV=${2:-.venv}
STAMP=$VENV/.installed

bash scripts/ensure-venv.sh "$PYTHON" "$VENV"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  say "installing leadwire and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
  touch "$STAMP"
fi
