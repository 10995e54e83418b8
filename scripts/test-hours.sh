#!/usr/bin/env bash
# The suite, run as if it were each given time of day in the demo account's time zone (America/New_York):
#   test-hours.sh 00:30 09:00 23:30
# The test process, the Graph sandbox inside it and every service it starts read a shifted clock (libfaketime, from
# Debian's faketime package; the monotonic clock moves by the same offset, so durations, timeouts and backoff are
# unchanged). PostgreSQL and RabbitMQ keep the machine's time, as servers on another host would. Extra pytest arguments: PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test-hours
. scripts/lib.sh

lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1 || true)
if [ -z "$lib" ]; then
  apt_install faketime
  lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 | head -n 1)
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
  say "the suite at $at America/New_York (wall clock shifted ${offset} s)"
  # shellcheck disable=SC2086
  LD_PRELOAD=$lib FAKETIME="$offset" bash scripts/test.sh -q ${PYTEST_ARGS:-} \
    || die "the suite failed at $at America/New_York"
done
