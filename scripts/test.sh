#!/usr/bin/env bash
# `make test`: the suite against real RabbitMQ, PostgreSQL and the Graph sandbox. Its messages go to a vhost of its
# own (LEADWIRE_TEST_VHOST, recreated empty); where no vhost can be made (no rabbitmqctl here, no management API),
# to AMQP_URL's own vhost under a per-run namespace, deleted at the end. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test
. scripts/lib.sh

rc=0
bash scripts/ensure-infra.sh --test-vhost || rc=$?
if [ "$rc" = 3 ]; then
  export LEADWIRE_TEST_SHARED_VHOST=1 LEADWIRE_BROKER_NAMESPACE="lwtest-$(date +%s)-$$"
  say "the suite runs in AMQP_URL's own vhost instead, its exchanges and queues named $LEADWIRE_BROKER_NAMESPACE.*"
elif [ "$rc" != 0 ]; then
  exit "$rc"
fi
# The console's browser tests drive Debian's Chromium (never a browser build downloaded by playwright), through
# playwright's driver, which needs libatomic.
if [ ! -x /usr/bin/chromium ] || ! ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1'; then
  (apt_install chromium libatomic1) || say "chromium could not be installed: the console's browser tests will be skipped"
fi
exec .venv/bin/python -m pytest "$@"
