# Helpers shared by the set-up scripts (sourced, not run). Needs only bash and python3's standard library:
# a minimal Debian/Ubuntu server has no curl, no sudo and no psql.

TAG=${TAG:-setup}
say() { printf '[%s] %s\n' "$TAG" "$*"; }
die() { printf '[%s] %s\n' "$TAG" "$*" >&2; exit 1; }

# How to become root when we are not: sudo where installed (LEADWIRE_SUDO= to never use it).
SUDO=${LEADWIRE_SUDO-sudo}
have_sudo() { [ -n "$SUDO" ] && command -v "$SUDO" >/dev/null 2>&1; }

# Run a command as root: directly when we are root, else through sudo; without either, stop with one line that
# says what needs root and the command to run.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif have_sudo; then
    "$SUDO" "$@"
  else
    die "this step needs root and sudo is not installed: run as root \`$*\`, then run make again"
  fi
}

# Install Debian packages (apt-get update first: a fresh machine has no package lists).
apt_install() {
  command -v apt-get >/dev/null 2>&1 \
    || die "cannot install $* here (no apt-get): install it with this system's package manager, then run make again"
  if [ "$(id -u)" != 0 ] && ! have_sudo; then
    die "installing $* needs root and sudo is not installed: run as root \`apt-get update && apt-get install -y $*\`, then run make again"
  fi
  say "installing $* from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# host:port takes TCP connections?
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Is host:port free to listen on? (an address already in use answers, or refuses the bind)
port_free() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null
import signal; signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: quietly, no traceback
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
PY
}

# HTTP without curl: http METHOD URL [JSON_BODY] prints the body; exit 1 on a connection error or a non-2xx answer.
http() {
  python3 - "$@" <<'PY'
import signal; signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: quietly, no traceback
import sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.stdout.write(response.read().decode())
except (OSError, urllib.error.URLError) as exc:
    sys.stderr.write(f"{method} {url}: {exc}\n")
    sys.exit(1)
PY
}

# Wait until a probe command succeeds; stop at once when the process it waits for has died (pid given), or after
# the timeout: wait_until SECONDS PID|- WHAT COMMAND...
wait_until() {
  local seconds=$1 pid=$2 what=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" 2>/dev/null; do
    if [ "$pid" != - ] && ! kill -0 "$pid" 2>/dev/null; then
      say "$what exited before it was ready (its output is above)" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$what was not ready within ${seconds} s" >&2
      return 1
    fi
    sleep 0.5
  done
}

# One part of a URL: url_part URL host|port|user|password|path DEFAULT_PORT
url_part() {
  python3 - "$@" <<'PY'
import signal; signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: quietly, no traceback
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print({"host": p.hostname or "127.0.0.1", "port": p.port or int(sys.argv[3]), "user": u.unquote(p.username or ""),
       "password": u.unquote(p.password or ""), "path": p.path.lstrip("/")}[sys.argv[2]])
PY
}

is_local() { [[ "$1" == 127.* || "$1" == localhost || "$1" == ::1 ]]; }
