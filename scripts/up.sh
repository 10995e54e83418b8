#!/usr/bin/env bash
# Run the whole system in the foreground (Ctrl-C or SIGTERM stops it cleanly).
# Without META_ACCESS_TOKEN this is a demo: the Graph sandbox stands in for Meta, with a simulated ad account,
# and its lead generator sends signed leadgen webhooks to the ingress.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
if [ -f .env ]; then set -a; . ./.env; set +a; fi

SANDBOX_PORT=${SANDBOX_PORT:-8090}
DEMO_LEADS_PER_MINUTE=${DEMO_LEADS_PER_MINUTE:-6}
INGRESS_PORT=${INGRESS_PORT:-8080}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url seconds
  for _ in $(seq 1 "$2"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 1; done; return 1
}

if [ -z "${META_ACCESS_TOKEN:-}" ]; then
  cat <<BANNER
################################################################################################
#  DEMO MODE: META_ACCESS_TOKEN is not set, so leadwire runs against the Graph SANDBOX, a       #
#  simulated Meta ad account on http://127.0.0.1:${SANDBOX_PORT}. No real ads, leads or money are touched.  #
#  To run against Meta, set META_* in .env (see .env.example and the README).                  #
################################################################################################
BANNER
  export META_GRAPH_URL="http://127.0.0.1:${SANDBOX_PORT}"
  export META_ACCESS_TOKEN=demo-system-user-token
  export META_PAGE_ACCESS_TOKEN=demo-page-token
  export META_APP_ID=${META_APP_ID:-100000000000001}
  export META_APP_SECRET=${META_APP_SECRET:-demo-app-secret}
  export META_WEBHOOK_VERIFY_TOKEN=${META_WEBHOOK_VERIFY_TOKEN:-demo-verify-token}
  $BIN/python -m services.graph_sandbox --host 127.0.0.1 --port "$SANDBOX_PORT" \
    --app-id "$META_APP_ID" --app-secret "$META_APP_SECRET" &
  pids+=($!)
  wait_http "http://127.0.0.1:${SANDBOX_PORT}/_sandbox/health" 30 || { echo "graph sandbox did not start"; exit 1; }
  # The simulated account's ids, as the sandbox seeded them.
  state=$(curl -fsS "http://127.0.0.1:${SANDBOX_PORT}/_sandbox/state")
  field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" <<<"$state"; }
  export META_AD_ACCOUNT_ID=${META_AD_ACCOUNT_ID:-$(field main_account)}
  export META_PAGE_IDS=${META_PAGE_IDS:-$(field page_id)}
  export META_PIXEL_ID=${META_PIXEL_ID:-$(field pixel_id)}
  echo "graph_sandbox      ready   http://127.0.0.1:${SANDBOX_PORT}/_sandbox/state"
  $BIN/leadwire pages subscribe >/dev/null  # as a real install would, once: the Page's leadgen subscription
fi

$BIN/leadwire run all &
pids+=($!)
wait_http "http://127.0.0.1:${INGRESS_PORT}/readyz" 60 || { echo "ingress did not become ready"; exit 1; }

if [ "${META_GRAPH_URL:-}" = "http://127.0.0.1:${SANDBOX_PORT}" ] && [ "$DEMO_LEADS_PER_MINUTE" != 0 ]; then
  curl -fsS -X POST "http://127.0.0.1:${SANDBOX_PORT}/_sandbox/webhooks" -H 'content-type: application/json' \
    -d "{\"target_url\": \"http://127.0.0.1:${INGRESS_PORT}/webhooks/meta\", \"app_secret\": \"${META_APP_SECRET}\",
         \"rate_per_second\": $(python3 -c "print(${DEMO_LEADS_PER_MINUTE}/60)")}" >/dev/null \
    && echo "demo lead generator: ${DEMO_LEADS_PER_MINUTE} leads/minute -> http://127.0.0.1:${INGRESS_PORT}/webhooks/meta"
fi
wait "${pids[-1]}"
