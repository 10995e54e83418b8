#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL answer at AMQP_URL / DATABASE_URL:
# use running servers; else start locally installed ones; else install them from Debian packages and start them.
# Then make sure the database role of DATABASE_URL exists (local servers only).
set -euo pipefail

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
DATABASE_URL=${DATABASE_URL:-postgresql://leadwire:leadwire@127.0.0.1:5432/leadwire}

say() { printf '[infra] %s\n' "$*"; }
url_part() { python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print({"host": p.hostname or "127.0.0.1", "port": p.port or int(sys.argv[3]), "user": p.username or "", "password": p.password or ""}[sys.argv[2]])' "$1" "$2" "$3"; }
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_for() { # host port name
  for _ in $(seq 1 120); do answers "$1" "$2" && return 0; sleep 1; done
  say "$3 did not answer on $1:$2 within 120 s"; return 1
}
is_local() { [[ "$1" == 127.* || "$1" == localhost || "$1" == ::1 ]]; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  say "installing $* from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- RabbitMQ -------------------------------------------------------------------------------------------------
rq_host=$(url_part "$AMQP_URL" host 5672); rq_port=$(url_part "$AMQP_URL" port 5672)
if answers "$rq_host" "$rq_port"; then
  say "RabbitMQ answers on $rq_host:$rq_port"
elif is_local "$rq_host"; then
  command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
  say "starting RabbitMQ"
  as_root service rabbitmq-server start >/dev/null 2>&1 || as_root /usr/sbin/rabbitmq-server -detached
  wait_for "$rq_host" "$rq_port" RabbitMQ
  say "RabbitMQ answers on $rq_host:$rq_port"
else
  say "RabbitMQ at $rq_host:$rq_port does not answer, and it is not local: start it, or fix AMQP_URL"; exit 1
fi

# --- PostgreSQL -----------------------------------------------------------------------------------------------
pg_host=$(url_part "$DATABASE_URL" host 5432); pg_port=$(url_part "$DATABASE_URL" port 5432)
if answers "$pg_host" "$pg_port"; then
  say "PostgreSQL answers on $pg_host:$pg_port"
elif is_local "$pg_host"; then
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  say "starting PostgreSQL"
  for version in $(ls /etc/postgresql); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
      || as_root service postgresql start >/dev/null 2>&1 || true
  done
  wait_for "$pg_host" "$pg_port" PostgreSQL
  say "PostgreSQL answers on $pg_host:$pg_port"
else
  say "PostgreSQL at $pg_host:$pg_port does not answer, and it is not local: start it, or fix DATABASE_URL"; exit 1
fi

# The role in DATABASE_URL, created on a local server through the postgres superuser (peer or trust auth).
pg_user=$(url_part "$DATABASE_URL" user 5432); pg_password=$(url_part "$DATABASE_URL" password 5432)
if is_local "$pg_host" && [ -n "$pg_user" ] && [ "$pg_user" != postgres ]; then
  superuser_psql() {
    if psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
      psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAq "$@"
    else
      as_root su postgres -c "psql -p $pg_port -d postgres -v ON_ERROR_STOP=1 -tAq $(printf '%q ' "$@")"
    fi
  }
  if [ "$(superuser_psql -c "select 1 from pg_roles where rolname = '$pg_user'")" != 1 ]; then
    say "creating database role $pg_user"
    superuser_psql -c "create role \"$pg_user\" login createdb password '$pg_password'"
  fi
fi

# A vhost of its own for the test suite (LEADWIRE_TEST_VHOST), so test messages never reach the real queues.
# Recreated empty for each run: queues no test consumes would otherwise collect messages run after run.
if [ "${1:-}" = --test-vhost ] && [ -n "${LEADWIRE_TEST_VHOST:-}" ] && is_local "$rq_host"; then
  rq_user=$(url_part "$AMQP_URL" user 5672); rq_user=${rq_user:-guest}
  if as_root rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$LEADWIRE_TEST_VHOST"; then
    as_root rabbitmqctl -q delete_vhost "$LEADWIRE_TEST_VHOST" >/dev/null
  fi
  say "creating RabbitMQ vhost $LEADWIRE_TEST_VHOST for tests"
  as_root rabbitmqctl -q add_vhost "$LEADWIRE_TEST_VHOST" >/dev/null
  as_root rabbitmqctl -q set_permissions -p "$LEADWIRE_TEST_VHOST" "$rq_user" '.*' '.*' '.*' >/dev/null
fi
