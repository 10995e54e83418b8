"""The set-up scripts behind `make up` / `make test`, run as a new user's machine would run them.

Each test runs a script for real, with what a minimal server lacks taken away: no sudo, no psql, no curl, Python
without venv, a half-made .venv, a busy port. What must come out is one line that says what to do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiormq
import pytest

from tests.fixtures import rabbit_node, vhosts
from tests.fixtures.infra import TEST_DSN

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
# Debian's own python3 (a user's machine); the venv's interpreter may live where another user cannot read.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run(argv, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          check=False, **kwargs)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory any user can enter, holding a copy of scripts/ (the checkout may sit under /root)."""
    path = Path(tempfile.mkdtemp(prefix="leadwire-setup-"))
    path.chmod(0o755)
    shutil.copytree(SCRIPTS, path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", path / "pyproject.toml")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_venv_left_without_pip_is_rebuilt(tmp_path: Path) -> None:
    python = sys.executable
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)  # what a failed run leaves
    done = run(["bash", str(SCRIPTS / "ensure-venv.sh"), python, str(venv)])
    assert done.returncode == 0, done.stderr
    assert "no working pip" in done.stdout
    assert "rebuilding" in done.stdout
    assert run([str(venv / "bin" / "python"), "-m", "pip", "--version"]).returncode == 0
    # A working venv is left alone.
    again = run(["bash", str(SCRIPTS / "ensure-venv.sh"), python, str(venv)])
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


@pytest.mark.skipif(SYSTEM_PYTHON is None or shutil.which("setpriv") is None, reason="needs /usr/bin/python3, setpriv")
def test_python_without_venv_and_a_user_without_sudo_gets_one_line_naming_the_package(world_dir: Path) -> None:
    # Debian's python3 without python3.X-venv: `import ensurepip` fails. A module of that name that fails to import,
    # first on the path, makes any Python look like that.
    shadow = world_dir / "no-ensurepip"
    shadow.mkdir()
    (shadow / "ensurepip.py").write_text("raise ImportError('ensurepip is not installed (python3-venv)')\n")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    done = run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "bash", str(world_dir / "scripts" / "ensure-venv.sh"), SYSTEM_PYTHON, str(world_dir / "venv")],
        env={"PYTHONPATH": str(shadow), "LEADWIRE_SUDO": ""},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"python{version}-venv" in lines[0]
    assert "root" in lines[0]
    assert "apt-get install -y" in lines[0]
    assert not (world_dir / "venv").exists()


def _listening() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("variable", ["SANDBOX_PORT", "INGRESS_PORT"])
def test_up_on_a_busy_port_says_which_and_how_to_move_it(world_dir: Path, variable: str) -> None:
    busy, port = _listening()
    with busy:
        env = {"SANDBOX_PORT": str(_free_port()), "INGRESS_PORT": str(_free_port()), variable: str(port)}
        done = run(["bash", str(world_dir / "scripts" / "up.sh")], env=env, cwd=world_dir, timeout=30)
    assert done.returncode == 1
    what = "the Graph sandbox" if variable == "SANDBOX_PORT" else "the ingress's webhooks"
    expected = f"[up] port {port} ({what}) is in use: stop what listens there, or set {variable} to a free port"
    assert done.stderr.strip() == expected


def test_the_scripts_need_no_curl() -> None:
    # A minimal server has no curl: probes and control calls go through Python's standard library.
    for script in SCRIPTS.glob("*.sh"):
        commands = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in commands if "curl" in line], script.name


def _path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with the usual tools, less `missing` (psql on a machine whose PostgreSQL runs in a container)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for tool in Path(directory).iterdir() if Path(directory).is_dir() else ():
            if tool.name not in missing and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    return str(bin_dir)


def test_a_database_that_lets_the_role_in_needs_no_psql_nor_postgres_user(tmp_path: Path) -> None:
    env = {"PATH": _path_without(tmp_path, "psql", "su", "sudo"), "DATABASE_URL": TEST_DSN,
           "VENV": str(Path(sys.executable).parents[1])}
    done = run(["bash", str(SCRIPTS / "ensure-infra.sh")], env=env)
    assert done.returncode == 0, done.stderr
    assert "PostgreSQL answers" in done.stdout
    assert "creating database role" not in done.stdout
    assert done.stderr == ""


def test_a_role_the_database_refuses_without_psql_here_is_one_line(tmp_path: Path) -> None:
    url = urlsplit(TEST_DSN)
    dsn = urlunsplit(url._replace(netloc=f"leadwire_nobody_here:{url.password}@{url.hostname}:{url.port or 5432}"))
    env = {"PATH": _path_without(tmp_path, "psql"), "DATABASE_URL": dsn, "VENV": str(Path(sys.executable).parents[1])}
    done = run(["bash", str(SCRIPTS / "ensure-infra.sh")], env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"[infra] PostgreSQL on {url.hostname}:{url.port or 5432} refuses role leadwire_nobody_here, and psql is not "
        "here: create it (create role \"leadwire_nobody_here\" login createdb password "
        "'<the password in DATABASE_URL>')"
        " or fix DATABASE_URL"
    ]
    assert f":{url.password}@" not in done.stdout + done.stderr  # no password printed


async def _declare_leftovers(amqp_url: str) -> None:
    connection = await aiormq.connect(amqp_url)
    channel = await connection.channel()
    await channel.exchange_declare("leftover.exchange", exchange_type="topic", durable=True)
    await channel.queue_declare("leftover.queue", durable=True)
    await channel.queue_bind("leftover.queue", "leftover.exchange", routing_key="#")
    await connection.close()


async def _declared(amqp_url: str, queue: str) -> bool:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        await connection.close()


async def _opens(amqp_url: str) -> bool:
    try:
        connection = await aiormq.connect(amqp_url)
    except (aiormq.exceptions.AMQPError, ConnectionError, OSError):
        return False
    await connection.close()
    return True


@pytest.mark.slow
@pytest.mark.skipif(not rabbit_node.available(), reason="needs RabbitMQ installed here, to run a node of its own")
async def test_without_rabbitmqctl_the_test_vhost_is_made_through_the_management_api() -> None:
    # A broker in a container or on another host: no rabbitmqctl here, its management API instead.
    async with rabbit_node.private_rabbitmq(management=True) as node:
        broker = vhosts.Broker(node.amqp_url, node.management_url, ctl=None)
        vhost_url = node.amqp_url + "leadwire_test_api"
        assert not await _opens(vhost_url)
        assert await asyncio.to_thread(vhosts.create, "leadwire_test_api", fresh=True, broker=broker) == (
            "the management API")
        assert await _opens(vhost_url)
        # Again: emptied, never deleted (tests/fixtures/vhosts.py): what a run left there is gone, the vhost stays.
        await _declare_leftovers(vhost_url)
        await asyncio.to_thread(vhosts.create, "leadwire_test_api", fresh=True, broker=broker)
        assert await _opens(vhost_url)
        assert not await _declared(vhost_url, "leftover.queue"), "the queue a run left is deleted"
        # A wrong address is one line naming it, not a traceback.
        nowhere = vhosts.Broker(node.amqp_url, f"http://127.0.0.1:{_free_port()}", ctl=None)
        with pytest.raises(vhosts.VhostError, match=r"management API at http://127\.0\.0\.1:[0-9]+ does not answer"):
            await asyncio.to_thread(vhosts.create, "leadwire_test_api", broker=nowhere)


@pytest.mark.slow
@pytest.mark.skipif(not rabbit_node.available(), reason="needs RabbitMQ installed here, to run a node of its own")
async def test_without_any_way_to_make_a_vhost_the_suite_runs_under_a_namespace_of_its_own(tmp_path: Path) -> None:
    # A broker this machine cannot administer (no rabbitmqctl, no management API): `make test` still runs, in the
    # broker's own vhost, with every exchange and queue under a per-run namespace, removed when the run ends.
    async with rabbit_node.private_rabbitmq() as node:
        env = {**os.environ, "PATH": _path_without(tmp_path, "rabbitmqctl"), "AMQP_URL": node.amqp_url,
               "RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{_free_port()}"}
        env.pop("LEADWIRE_BROKER_NAMESPACE", None)
        env.pop("LEADWIRE_TEST_SHARED_VHOST", None)
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", str(SCRIPTS / "test.sh"), "-q", "-p", "no:cacheprovider",
             "tests/integration/test_messaging.py::test_failing_message_is_parked_after_attempts_and_consumer_goes_on"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout
        said = [line for line in done.stdout.splitlines() if "runs in AMQP_URL's own vhost instead" in line]
        assert len(said) == 1, done.stdout
        namespace = said[0].rsplit(" ", 1)[-1].removesuffix(".*")
        assert namespace.startswith("lwtest-")
        connection = await aiormq.connect(node.amqp_url)
        try:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):  # the run's exchange is gone with it
                await channel.exchange_declare(namespace, exchange_type="topic", passive=True)
        finally:
            await connection.close()
