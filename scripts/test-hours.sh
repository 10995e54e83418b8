#!/usr/bin/env bash
# The suite, run as if it were each given time of day in the demo account's time zone (America/New_York):
#   test-hours.sh 00:30 09:00 23:30
# The test process, the Graph sandbox inside it, every service it starts, and a PostgreSQL cluster of its own (on a
# free port, in a temporary directory: the machine's server is never touched) all read one shifted clock
# (libfaketime, from Debian's faketime package; the monotonic clock moves by the same offset, so durations,
# timeouts and backoff are unchanged). RabbitMQ keeps the machine's time: it only measures durations. Without a
# local PostgreSQL installation to run that cluster, the suite uses DATABASE_URL's server, whose clock is not
# shifted (then tests that compare the two clocks may fail for that reason alone). Extra pytest arguments:
# PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test-hours
. scripts/lib.sh

lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1 || true)
if [ -z "$lib" ]; then
  apt_install faketime
  lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 | head -n 1)
fi

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
cluster=""
if [ -n "$pg_bin" ]; then
  cluster=$(mktemp -d /tmp/leadwire-test-hours.XXXXXX)
  chmod 755 "$cluster"
  owner=$(id -un)
  [ "$(id -u)" != 0 ] || owner=postgres # initdb refuses root
  [ "$owner" = "$(id -un)" ] || chown "$owner" "$cluster"
  as_owner() { if [ "$owner" = "$(id -un)" ]; then "$@"; else runuser -u "$owner" -- "$@"; fi; }
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$pg_bin/initdb" -D "$cluster/data" -A trust -U postgres --no-sync >"$cluster/initdb.log" 2>&1 \
    || die "initdb failed: see $cluster/initdb.log"
  trap 'as_owner "$pg_bin/pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$cluster"' EXIT
fi

for at in "$@"; do
  offset=$(python3 - "$at" <<'PY'
import sys, time
from datetime import datetime, time as dtime
from zoneinfo import ZoneInfo
zone = ZoneInfo("America/New_York")
now = time.time()
target = datetime.combine(datetime.fromtimestamp(now, zone).date(), dtime.fromisoformat(sys.argv[1]), zone)
print(f"{round(target.timestamp() - now):+d}")
PY
)
  say "the suite at $at America/New_York (clock shifted ${offset} s)"
  if [ -n "$cluster" ]; then
    LD_PRELOAD=$lib FAKETIME="$offset" as_owner "$pg_bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w \
      -o "-p $pg_port -k $cluster -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
    export DATABASE_URL="postgresql://postgres@127.0.0.1:${pg_port}/leadwire"
  fi
  status=0
  # shellcheck disable=SC2086
  LD_PRELOAD=$lib FAKETIME="$offset" bash scripts/test.sh -q ${PYTEST_ARGS:-} || status=$?
  [ -z "$cluster" ] || as_owner "$pg_bin/pg_ctl" -D "$cluster/data" -m fast -w stop >/dev/null
  [ "$status" = 0 ] || die "the suite failed at $at America/New_York"
done
