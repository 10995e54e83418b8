#!/usr/bin/env bash
# Run the whole system in the foreground (Ctrl-C or SIGTERM stops it cleanly).
# Without META_ACCESS_TOKEN this is a demo: the Graph sandbox stands in for Meta, with a simulated ad account,
# and its lead generator sends signed leadgen webhooks to the ingress.
# Needs bash and python3 only (no curl): probes and control calls use Python's standard library.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=up
. scripts/lib.sh
BIN=.venv/bin
if [ -f .env ]; then set -a; . ./.env; set +a; fi

SANDBOX_PORT=${SANDBOX_PORT:-8090}
DEMO_CRM_PORT=${DEMO_CRM_PORT:-8091}
DEMO_LEADS_PER_MINUTE=${DEMO_LEADS_PER_MINUTE:-6}
INGRESS_PORT=${INGRESS_PORT:-8080}
pids=()
interrupted=0
cleanup() {
  # Ctrl-C reached every process of the foreground group already: let them finish their shutdown rather than
  # signal them again in the middle of it. Otherwise (SIGTERM to this script, an error) stop them.
  if [ "$interrupted" = 1 ]; then
    for _ in $(seq 1 40); do
      alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.5
    done
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'interrupted=1; exit 130' INT
trap 'exit 143' TERM

need_port() { # PORT VARIABLE WHAT
  port_free 127.0.0.1 "$1" || die "port $1 ($3) is in use: stop what listens there, or set $2 to a free port"
}

need_port "$INGRESS_PORT" INGRESS_PORT "the ingress's webhooks"

if [ -z "${META_ACCESS_TOKEN:-}" ]; then
  cat <<BANNER
################################################################################################
#  DEMO MODE: META_ACCESS_TOKEN is not set, so leadwire runs against the Graph SANDBOX, a       #
#  simulated Meta ad account on http://127.0.0.1:${SANDBOX_PORT}. No real ads, leads or money are touched.  #
#  To run against Meta, set META_* in .env (see .env.example and the README).                  #
################################################################################################
BANNER
  need_port "$SANDBOX_PORT" SANDBOX_PORT "the Graph sandbox"
  export META_GRAPH_URL="http://127.0.0.1:${SANDBOX_PORT}"
  export META_ACCESS_TOKEN=demo-system-user-token
  export META_APP_ID=${META_APP_ID:-100000000000001}
  export META_APP_SECRET=${META_APP_SECRET:-demo-app-secret}
  export META_WEBHOOK_VERIFY_TOKEN=${META_WEBHOOK_VERIFY_TOKEN:-demo-verify-token}
  $BIN/python -m services.graph_sandbox --host 127.0.0.1 --port "$SANDBOX_PORT" \
    --app-id "$META_APP_ID" --app-secret "$META_APP_SECRET" &
  pids+=($!)
  wait_until 30 "${pids[-1]}" "the graph sandbox" http GET "http://127.0.0.1:${SANDBOX_PORT}/_sandbox/health" >/dev/null \
    || exit 1
  # The simulated account's ids, as the sandbox seeded them.
  state=$(http GET "http://127.0.0.1:${SANDBOX_PORT}/_sandbox/state")
  field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" <<<"$state"; }
  export META_AD_ACCOUNT_ID=${META_AD_ACCOUNT_ID:-$(field main_account)}
  export META_PAGE_IDS=${META_PAGE_IDS:-$(field page_id)}
  export META_PIXEL_ID=${META_PIXEL_ID:-$(field pixel_id)}
  export META_PAGE_ACCESS_TOKEN=$(field page_access_token)  # the Page's own: Meta takes no other for its Page calls
  echo "graph_sandbox      ready   http://127.0.0.1:${SANDBOX_PORT}/_sandbox/state"
  $BIN/leadwire pages subscribe >/dev/null # as a real install would, once: the Page's leadgen subscription

  if [ -z "${CRM_WEBHOOK_URL:-}" ] && [ -z "${GHL_API_TOKEN:-}" ]; then # no CRM configured: the demo's own
    need_port "$DEMO_CRM_PORT" DEMO_CRM_PORT "the demo CRM"
    export CRM_WEBHOOK_URL="http://127.0.0.1:${DEMO_CRM_PORT}/hook"
    export CRM_WEBHOOK_SECRET=${CRM_WEBHOOK_SECRET:-demo-crm-secret}
    $BIN/python -m services.demo_crm --port "$DEMO_CRM_PORT" &
    pids+=($!)
    wait_until 30 "${pids[-1]}" "the demo CRM" http GET "http://127.0.0.1:${DEMO_CRM_PORT}/healthz" >/dev/null || exit 1
    echo "demo_crm           ready   http://127.0.0.1:${DEMO_CRM_PORT}/ (the leads it received)"
  fi
fi

CONSOLE_PORT=${CONSOLE_PORT:-8087}
need_port "$CONSOLE_PORT" CONSOLE_PORT "the operator's console"
if [ -z "${CONSOLE_USERS:-}" ] && [ "${META_GRAPH_URL:-}" = "http://127.0.0.1:${SANDBOX_PORT}" ]; then
  # The demo's console gets an operator of its own, with a password made for this run.
  console_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
  CONSOLE_USERS=$($BIN/leadwire console add-user demo --password-stdin <<<"$console_password" 2>/dev/null)
  export CONSOLE_USERS
fi

$BIN/leadwire run all &
pids+=($!)
wait_until 60 "${pids[-1]}" "leadwire run all" http GET "http://127.0.0.1:${INGRESS_PORT}/readyz" >/dev/null || exit 1
wait_until 60 "${pids[-1]}" "the console" http GET "http://127.0.0.1:${CONSOLE_PORT}/healthz" >/dev/null || exit 1
if [ "${META_GRAPH_URL:-}" = "http://127.0.0.1:${SANDBOX_PORT}" ] && [ "$DEMO_LEADS_PER_MINUTE" != 0 ]; then
  rate=$(python3 -c "print(${DEMO_LEADS_PER_MINUTE} / 60)")
  http POST "http://127.0.0.1:${SANDBOX_PORT}/_sandbox/webhooks" \
    "{\"target_url\": \"http://127.0.0.1:${INGRESS_PORT}/webhooks/meta\", \"app_secret\": \"${META_APP_SECRET}\",
      \"rate_per_second\": ${rate}}" >/dev/null \
    && echo "demo lead generator: ${DEMO_LEADS_PER_MINUTE} leads/minute -> http://127.0.0.1:${INGRESS_PORT}/webhooks/meta"
fi
# Last, once everything is up: the console's address (and the demo's operator).
if [ -n "${console_password:-}" ]; then
  echo "console            ready   http://127.0.0.1:${CONSOLE_PORT}/ (user demo, password ${console_password})"
else
  echo "console            ready   http://127.0.0.1:${CONSOLE_PORT}/"
fi
wait "${pids[-1]}"
