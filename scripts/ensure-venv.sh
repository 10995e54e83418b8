#!/usr/bin/env bash
# Make sure VENV is a working virtualenv (with pip) of a Python >= 3.11:
# - Debian/Ubuntu ship python3 without venv/ensurepip (package python3.X-venv): install it (root or sudo);
# - a .venv left half-made by a failed run (no working pip) is rebuilt, not reused.
# Usage: ensure-venv.sh PYTHON VENV
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=venv
. scripts/lib.sh
PYTHON=${1:-python3}
VENV=${2:-.venv}

command -v "$PYTHON" >/dev/null 2>&1 \
  || die "$PYTHON not found: install Python 3.11 or newer (Debian/Ubuntu: apt-get install python3 python3-venv)"
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "leadwire needs Python 3.11 or newer, and $PYTHON is $version: install one and run make PYTHON=python3.12 (say)"

venv_works() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

if ! venv_works; then
  if [ -e "$VENV" ]; then
    say "$VENV has no working pip (left by a failed set-up?): rebuilding it"
    rm -rf "$VENV"
  fi
  # Debian and Ubuntu split venv and ensurepip out of python3 into python3.X-venv.
  if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install "python${version}-venv"
  fi
  say "creating $VENV with $PYTHON ($version)"
  if ! "$PYTHON" -m venv "$VENV" || ! venv_works; then
    rm -rf "$VENV"
    die "$PYTHON -m venv failed (see above); on Debian/Ubuntu install python${version}-venv, then run make again"
  fi
fi
