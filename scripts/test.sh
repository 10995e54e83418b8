#!/usr/bin/env bash
# `make test`: the suite against real RabbitMQ, PostgreSQL and the Graph sandbox. Its messages go to a vhost of its
# own (LEADWIRE_TEST_VHOST, recreated empty); where no vhost can be made (no rabbitmqctl here, no management API),
# to AMQP_URL's own vhost under a per-run namespace, deleted at the end. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test
. scripts/lib.sh

# A broker that listens but does not answer (hung) would hold every test: the suite then runs on a RabbitMQ node of
# its own, started here from the installed RabbitMQ and stopped at the end (the machine's broker is left alone).
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
rq_port=$(url_part "$AMQP_URL" port 5672)
if ! port_free "$(url_part "$AMQP_URL" host 127.0.0.1)" "$rq_port" \
   && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
   && ! .venv/bin/python -m tests.fixtures.rabbit_node answers "$AMQP_URL" 15; then
  say "RabbitMQ at port $rq_port listens but does not answer: the suite runs on a RabbitMQ node of its own"
  eval "$(.venv/bin/python -m tests.fixtures.rabbit_node start)"
  # shellcheck disable=SC2064
  trap ".venv/bin/python -m tests.fixtures.rabbit_node stop '$LEADWIRE_SUITE_RABBIT_DIR' '$LEADWIRE_SUITE_RABBIT_NODE'" EXIT
fi

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
if [ -n "${LEADWIRE_SUITE_RABBIT_NODE:-}" ]; then
  .venv/bin/python -m pytest "$@"  # not exec: the trap stops the suite's own node
else
  exec .venv/bin/python -m pytest "$@"
fi
