#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL answer at AMQP_URL / DATABASE_URL:
# use running servers (this machine's, a container's, another host's); else start locally installed ones; else
# install them from Debian packages and start them. Then make sure the role of DATABASE_URL can log in.
# With --test-vhost: also (re)create the test suite's vhost LEADWIRE_TEST_VHOST, empty (exit 3 if it cannot).
# Needs bash and python3 only (no curl, psql or sudo unless a step needs them: then one line says what to do).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=infra
. scripts/lib.sh

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
DATABASE_URL=${DATABASE_URL:-postgresql://leadwire:leadwire@127.0.0.1:5432/leadwire}
PY=${VENV:-.venv}/bin/python

# Anything running whose command line contains $1? (/proc: procps may not be installed)
running() {
  local cmdline
  for cmdline in /proc/[0-9]*/cmdline; do
    [ -r "$cmdline" ] && tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -q -- "$1" && return 0
  done
  return 1
}

# wait_for_server NAME HOST PORT PROCESS_PATTERN LOG_GLOB: wait for the port; stop early, with the server's own
# last log lines, when its process is gone.
wait_for_server() {
  local name=$1 host=$2 port=$3 pattern=$4 logs=$5 gone=0
  for _ in $(seq 1 240); do
    answers "$host" "$port" && { say "$name answers on $host:$port"; return 0; }
    if running "$pattern"; then gone=0; else gone=$((gone + 1)); fi
    if [ "$gone" -ge 10 ]; then
      say "$name did not start (no $pattern process); the end of its log:"
      # shellcheck disable=SC2086
      tail -n 15 $logs 2>/dev/null | sed 's/^/    /' >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  die "$name is running but did not answer on $host:$port within 120 s: check its log ($logs)"
}

start_service() { # NAME: service(8), else the init script
  if command -v service >/dev/null 2>&1; then
    as_root service "$1" start >/dev/null 2>&1 && return 0
  fi
  [ -x "/etc/init.d/$1" ] && as_root "/etc/init.d/$1" start >/dev/null 2>&1
}

# --- RabbitMQ -------------------------------------------------------------------------------------------------
rq_host=$(url_part "$AMQP_URL" host 5672)
rq_port=$(url_part "$AMQP_URL" port 5672)
if answers "$rq_host" "$rq_port"; then
  say "RabbitMQ answers on $rq_host:$rq_port"
elif is_local "$rq_host"; then
  [ -x /usr/sbin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  say "starting RabbitMQ"
  start_service rabbitmq-server || as_root /usr/sbin/rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_for_server RabbitMQ "$rq_host" "$rq_port" beam.smp "/var/log/rabbitmq/*.log"
else
  die "RabbitMQ at $rq_host:$rq_port does not answer, and it is not on this machine: start it, or fix AMQP_URL"
fi

# --- PostgreSQL -----------------------------------------------------------------------------------------------
pg_host=$(url_part "$DATABASE_URL" host 5432)
pg_port=$(url_part "$DATABASE_URL" port 5432)
if answers "$pg_host" "$pg_port"; then
  say "PostgreSQL answers on $pg_host:$pg_port"
elif is_local "$pg_host"; then
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  say "starting PostgreSQL"
  for version in /etc/postgresql/*/; do
    version=$(basename "$version")
    (cd / && as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1) \
      || start_service postgresql || true
  done
  wait_for_server PostgreSQL "$pg_host" "$pg_port" "postgres -D" "/var/log/postgresql/*.log"
else
  die "PostgreSQL at $pg_host:$pg_port does not answer, and it is not on this machine: start it, or fix DATABASE_URL"
fi

# --- The role of DATABASE_URL ---------------------------------------------------------------------------------
# First just try to log in as it: a managed database or a container's needs nothing from this machine.
pg_login() {
  "$PY" - "$DATABASE_URL" <<'PY'
import asyncio, sys
import asyncpg

async def main() -> int:
    try:
        conn = await asyncpg.connect(sys.argv[1], timeout=10)
    except asyncpg.InvalidCatalogNameError:
        return 0  # the role logs in; its database comes with `leadwire migrate`
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError):
        return 1
    except Exception as exc:  # noqa: BLE001 - anything else is reported as it is
        print(f"[infra] PostgreSQL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    await conn.close()
    return 0

sys.exit(asyncio.run(main()))
PY
}
pg_user=$(url_part "$DATABASE_URL" user 5432)
login=0
pg_login || login=$?
if [ "$login" = 2 ]; then
  die "cannot log in to PostgreSQL at $pg_host:$pg_port (above): fix DATABASE_URL or the server"
elif [ "$login" = 1 ]; then
  fix="create it (create role \"$pg_user\" login createdb password '<the password in DATABASE_URL>') or fix DATABASE_URL"
  is_local "$pg_host" || die "PostgreSQL at $pg_host:$pg_port refuses role $pg_user: $fix"
  command -v psql >/dev/null 2>&1 || die "PostgreSQL on $pg_host:$pg_port refuses role $pg_user, and psql is not here: $fix"
  # Through the postgres superuser: over TCP where trust allows it, else as the postgres OS user (peer auth).
  superuser_psql() {
    if psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
      psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAq "$@"
    else
      (cd / && as_root su postgres -c "psql -p $pg_port -d postgres -v ON_ERROR_STOP=1 -tAq $(printf '%q ' "$@")")
    fi
  }
  say "creating database role $pg_user"
  pg_password=$(url_part "$DATABASE_URL" password 5432)
  exists=$(superuser_psql -c "select 1 from pg_roles where rolname = '$pg_user'") || die "cannot reach the postgres superuser: $fix"
  [ "$exists" != 1 ] || die "role $pg_user exists but refuses the password in DATABASE_URL: fix DATABASE_URL, or set the role's password"
  superuser_psql -c "create role \"$pg_user\" login createdb password '$pg_password'" >/dev/null \
    || die "could not create role $pg_user: $fix"
  pg_login || die "PostgreSQL still refuses role $pg_user after creating it: check pg_hba.conf for $pg_host"
fi

# --- The test suite's vhost -----------------------------------------------------------------------------------
# A vhost of its own, so test messages never reach the real queues; emptied for each run, never deleted (queues no test
# consumes would otherwise collect messages run after run).
if [ "${1:-}" = --test-vhost ]; then
  "$PY" -m tests.fixtures.vhosts recreate "${LEADWIRE_TEST_VHOST:-leadwire_test}" || exit 3
fi
