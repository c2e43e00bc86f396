"""Start throwaway RabbitMQ nodes for the test suite and the benchmarks.

Each `RabbitNode` is a private broker: its own node name, Erlang cookie,
config file, data directory and free loopback ports, so it runs next to a
system broker on the standard ports without touching it. The node runs the
server script directly (``/usr/lib/rabbitmq/bin/rabbitmq-server``) as the
current user, which must be root on Debian because the data and log
directories of the packaged broker belong to the ``rabbitmq`` user.

Setting ``PROVISIONER_TEST_RABBITMQ_ROOT`` to a chroot built by
``scripts/rabbitmq4-chroot.sh`` runs the broker (and ``rabbitmqctl``) from
that chroot instead, which gives RabbitMQ 4.0 on a Debian 12 host. The
chroot shares the host network, so HTTP and MQTT clients on the host reach
the node on the same ports.

This module only starts, stops and clusters nodes. Resetting broker state
between tests belongs to ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.chroot_proc import ChrootProcMount

logger = logging.getLogger(__name__)

ROOT_ENV_VAR = "PROVISIONER_TEST_RABBITMQ_ROOT"
SERVER_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
PLUGINS = ("rabbitmq_management", "rabbitmq_mqtt", "rabbitmq_web_mqtt")
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.2
LOG_TAIL_LINES = 40

# Ports handed out by this process and not yet released, so two nodes
# created back to back never receive the same port.
_reserved_ports: set[int] = set()


class RabbitNodeError(RuntimeError):
    """A throwaway RabbitMQ node failed to start, stop or respond."""


def _allocate_port() -> int:
    """Return a loopback TCP port that is free now and unique in this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _reserved_ports:
            _reserved_ports.add(port)
            return port


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR matches what the broker sets, so a port whose old
    # connections sit in TIME_WAIT counts as free, as it does for the broker.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _is_alive(pid: int) -> bool:
    """Return whether process `pid` runs.

    A zombie counts as stopped, because only its parent (the caller of
    `server_command()`) can reap it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class RabbitNode:
    """A private RabbitMQ node with management, MQTT and Web MQTT on loopback.

    Ports, node name, cookie and admin password are fixed when the object is
    created, so `restart()` brings the node back on the same addresses.
    `rabbitmq_root` names a chroot to run from; None reads
    ``PROVISIONER_TEST_RABBITMQ_ROOT`` and an empty string forces the host's
    RabbitMQ. `extra_config` lines are appended to ``rabbitmq.conf`` and
    `extra_env` entries override the node's environment.
    """

    def __init__(
        self,
        *,
        extra_config: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        rabbitmq_root: str | None = None,
        cookie: str | None = None,
        admin_user: str = "test-admin",
        admin_password: str | None = None,
        name_prefix: str = "prov",
        start_timeout: float = START_TIMEOUT_SECONDS,
    ) -> None:
        if rabbitmq_root is None:
            rabbitmq_root = os.environ.get(ROOT_ENV_VAR) or None
        self.rabbitmq_root: Path | None = (
            Path(rabbitmq_root).resolve() if rabbitmq_root else None
        )
        self.extra_config: list[str] = list(extra_config)
        self.extra_env: dict[str, str] = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.node_name = f"{name_prefix}-{secrets.token_hex(4)}@localhost"
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self.cookie = cookie or secrets.token_hex(20)
        self.amqp_port = _allocate_port()
        self.dist_port = _allocate_port()
        self.management_port = _allocate_port()
        self.mqtt_port = _allocate_port()
        self.web_mqtt_port = _allocate_port()
        self.base_dir = self._make_base_dir()
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout_file: Any = None
        self._version: str | None = None
        self._proc_mount = (
            ChrootProcMount(self.rabbitmq_root, self.node_name)
            if self.rabbitmq_root
            else None
        )
        self._prepared = False

    # Addresses

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API, without a trailing slash."""
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def web_mqtt_url(self) -> str:
        """WebSocket URL of the Web MQTT listener."""
        return f"ws://127.0.0.1:{self.web_mqtt_port}/ws"

    @property
    def version(self) -> str:
        """RabbitMQ version reported by ``/api/overview``."""
        if self._version is None:
            overview = self._get_json("/api/overview")
            self._version = str(overview["rabbitmq_version"])
        return self._version

    @property
    def pid(self) -> int | None:
        """Process id of the server script started by `start()`, if running."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def log_file(self) -> Path:
        """Host path of the node's log file."""
        return self.base_dir / "log" / "node.log"

    @property
    def stdout_file(self) -> Path:
        """Host path of the file receiving the server's stdout and stderr."""
        return self.base_dir / "stdout.log"

    @property
    def mnesia_dir(self) -> Path:
        """Host path of the node's data directory (Mnesia and message stores)."""
        return self.base_dir / "mnesia"

    # Lifecycle

    def start(self, wait: bool = True) -> None:
        """Start the node in the background and, by default, wait until ready.

        Raises `RabbitNodeError` when the node exits early or is not ready
        within `start_timeout` seconds.
        """
        if self.pid is not None:
            raise RabbitNodeError(f"node {self.node_name} is already running")
        argv, env = self.server_command()
        self._stdout_file = self.stdout_file.open("ab")
        logger.info("Starting RabbitMQ node %s in %s", self.node_name, self.base_dir)
        self._process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout_file,
            stderr=subprocess.STDOUT,
            # A session of its own lets stop() signal the script, the Erlang
            # VM and its port programs together.
            start_new_session=True,
        )
        if wait:
            try:
                self.wait_until_ready()
            except BaseException:
                self.stop(graceful=False)
                raise

    def wait_until_ready(self) -> None:
        """Block until the management API, vhosts and MQTT listeners are up."""
        deadline = time.monotonic() + self.start_timeout
        session = self._session()
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise self._start_error(
                    f"exited with status {self._process.returncode}"
                )
            if self._is_ready(session):
                logger.info("RabbitMQ node %s is ready", self.node_name)
                return
            if time.monotonic() > deadline:
                raise self._start_error(
                    f"was not ready after {self.start_timeout:.0f} s"
                )
            time.sleep(POLL_INTERVAL_SECONDS)

    def stop(self, graceful: bool = True) -> None:
        """Stop the node, reap its processes and wait until its ports are free.

        Stops a node started by `start()` through its process group, and a
        node started from `server_command()` by another process through the
        pid file the broker writes. With `graceful` false the node is killed
        at once, which skips the shutdown (about 7 s with RabbitMQ 3.10.8) but may
        lose recent writes, so use it only when the data is thrown away.
        Safe to call on a stopped node.
        """
        if self._process is not None:
            self._stop_process_group(self._process, graceful)
            self._process = None
        else:
            self._stop_by_pid_file(graceful)
        if self._stdout_file is not None:
            self._stdout_file.close()
            self._stdout_file = None
        self._wait_for_free_ports()
        if self._proc_mount is not None:
            self._proc_mount.release()
        logger.info("Stopped RabbitMQ node %s", self.node_name)

    def restart(self) -> None:
        """Stop the node and start it again on the same ports and data."""
        self.stop()
        self.start()

    def wipe_data(self) -> None:
        """Delete the node's data, as a redeploy on a fresh disk would.

        The next `start()` seeds the admin user again from the config file.
        """
        if self.pid is not None:
            raise RabbitNodeError(f"stop node {self.node_name} before wiping its data")
        shutil.rmtree(self.mnesia_dir, ignore_errors=True)
        self.mnesia_dir.mkdir()
        self._version = None

    def cleanup(self) -> None:
        """Kill the node and delete its directory."""
        self.stop(graceful=False)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        for port in self._ports():
            _reserved_ports.discard(port)

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    # Commands

    def server_command(self) -> tuple[list[str], dict[str, str]]:
        """Return the argv and environment that run this node in the foreground.

        Writes the config files first and, for a chroot, mounts its /proc, so
        the command works as returned. Call `stop()` afterwards to stop the
        node and release the mount.
        """
        self._check_installation()
        self._prepare()
        env = self._environment()
        if self.rabbitmq_root is None:
            return [SERVER_SCRIPT], env
        return ["chroot", str(self.rabbitmq_root), SERVER_SCRIPT], env

    def rabbitmqctl(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node.

        Raises `RabbitNodeError` with the command's output when `check` is
        true and the command fails.
        """
        argv = [RABBITMQCTL, "-n", self.node_name, *args]
        if self.rabbitmq_root is not None:
            argv = ["chroot", str(self.rabbitmq_root), *argv]
        result = subprocess.run(
            argv,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} failed on {self.node_name} "
                f"with status {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def node_path(self, host_path: Path) -> str:
        """Translate a host path to the path the broker opens.

        Outside a chroot this is the same path. Use it for files named in
        `extra_config`, such as TLS certificates placed under `base_dir`.
        """
        if self.rabbitmq_root is None:
            return str(host_path)
        return "/" + str(host_path.relative_to(self.rabbitmq_root))

    def session(self) -> requests.Session:
        """Return a `requests.Session` authenticated as the seeded admin."""
        return self._session()

    # Internals

    def _check_installation(self) -> None:
        root = self.rabbitmq_root or Path("/")
        script = root / SERVER_SCRIPT.lstrip("/")
        if script.exists():
            return
        if self.rabbitmq_root is None:
            hint = "install the rabbitmq-server package"
        else:
            hint = f"build the chroot with scripts/rabbitmq4-chroot.sh {root}"
        raise RabbitNodeError(f"RabbitMQ server script {script} not found: {hint}")

    def _make_base_dir(self) -> Path:
        if self.rabbitmq_root is None:
            return Path(tempfile.mkdtemp(prefix="rabbitmq-node-"))
        tmp_in_root = self.rabbitmq_root / "tmp"
        if not tmp_in_root.is_dir():
            raise RabbitNodeError(
                f"{tmp_in_root} not found: set {ROOT_ENV_VAR} to a chroot built "
                "by scripts/rabbitmq4-chroot.sh"
            )
        return Path(tempfile.mkdtemp(prefix="rabbitmq-node-", dir=tmp_in_root))

    def _prepare(self) -> None:
        if self._proc_mount is not None:
            self._proc_mount.acquire()
        if self._prepared:
            return
        for name in ("home", "log", "mnesia"):
            (self.base_dir / name).mkdir(exist_ok=True)
        cookie_file = self.base_dir / "home" / ".erlang.cookie"
        cookie_file.write_text(self.cookie)
        cookie_file.chmod(0o400)
        (self.base_dir / "rabbitmq.conf").write_text(self._config_text())
        (self.base_dir / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        self._prepared = True

    def _config_text(self) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            "management.tcp.ip = 127.0.0.1",
            f"management.tcp.port = {self.management_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}",
            "web_mqtt.tcp.ip = 127.0.0.1",
            f"web_mqtt.tcp.port = {self.web_mqtt_port}",
            f"default_user = {self.admin_user}",
            f"default_pass = {self.admin_password}",
            "default_user_tags.administrator = true",
            "default_permissions.configure = .*",
            "default_permissions.write = .*",
            "default_permissions.read = .*",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _environment(self) -> dict[str, str]:
        base = self.base_dir
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": self.node_path(base / "home"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": self.node_path(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": self.node_path(base / "rabbitmq.conf"),
            # Point these at files that do not exist so the host's
            # /etc/rabbitmq never leaks into a private node.
            "RABBITMQ_ADVANCED_CONFIG_FILE": self.node_path(base / "advanced.config"),
            "RABBITMQ_CONFIG_FILES": self.node_path(base / "conf.d"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": self.node_path(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": self.node_path(base / "mnesia"),
            "RABBITMQ_MNESIA_DIR": self.node_path(base / "mnesia" / "node"),
            "RABBITMQ_LOG_BASE": self.node_path(base / "log"),
            "RABBITMQ_LOGS": self.node_path(self.log_file),
            "RABBITMQ_PID_FILE": self.node_path(base / "node.pid"),
            # Keep Erlang distribution (node and CLI) on loopback.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            **self.extra_env,
        }

    def _ports(self) -> tuple[int, ...]:
        return (
            self.amqp_port,
            self.dist_port,
            self.management_port,
            self.mqtt_port,
            self.web_mqtt_port,
        )

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.auth = (self.admin_user, self.admin_password)
        # Proxy settings in the environment must never redirect loopback calls.
        session.trust_env = False
        return session

    def _get_json(self, path: str) -> Any:
        response = self._session().get(self.management_url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def _is_ready(self, session: requests.Session) -> bool:
        try:
            overview = session.get(self.management_url + "/api/overview", timeout=5)
            if overview.status_code != 200:
                return False
            health = session.get(
                self.management_url + "/api/health/checks/virtual-hosts", timeout=5
            )
            if health.status_code != 200:
                return False
        except requests.RequestException:
            return False
        listening = {
            int(listener["port"]) for listener in overview.json().get("listeners", [])
        }
        # The listener list fills in a few seconds after the API first responds.
        return {self.mqtt_port, self.web_mqtt_port} <= listening

    def _start_error(self, reason: str) -> RabbitNodeError:
        return RabbitNodeError(
            f"RabbitMQ node {self.node_name} {reason}.\n"
            f"--- last lines of {self.log_file} ---\n{_tail(self.log_file)}\n"
            f"--- last lines of {self.stdout_file} ---\n{_tail(self.stdout_file)}"
        )

    def _stop_process_group(
        self, process: subprocess.Popen[bytes], graceful: bool
    ) -> None:
        if graceful and process.poll() is None:
            # SIGTERM makes the Erlang VM run a graceful init:stop().
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "RabbitMQ node %s ignored SIGTERM for %.0f s, killing it",
                    self.node_name,
                    STOP_TIMEOUT_SECONDS,
                )
        # The script can exit before the VM's helper processes do, so the
        # whole group is killed in every case.
        self._signal_group(process.pid, signal.SIGKILL)
        process.wait()

    def _stop_by_pid_file(self, graceful: bool) -> None:
        pid_file = self.base_dir / "node.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        deadline = time.monotonic() + (STOP_TIMEOUT_SECONDS if graceful else 0)
        try:
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
            while time.monotonic() < deadline and _is_alive(pid):
                time.sleep(POLL_INTERVAL_SECONDS)
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)

    @staticmethod
    def _signal_group(pgid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)

    def _wait_for_free_ports(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while True:
            busy = [port for port in self._ports() if not _port_is_free(port)]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(
                    f"ports {busy} of node {self.node_name} are still in use "
                    f"{STOP_TIMEOUT_SECONDS:.0f} s after it stopped"
                )
            time.sleep(POLL_INTERVAL_SECONDS)


def start_cluster(count: int = 2, **node_options: Any) -> list[RabbitNode]:
    """Start `count` nodes and join every node after the first to the first.

    The nodes share one Erlang cookie and one admin password, because a
    joining node is reset and then uses the first node's users.
    `node_options` go to each `RabbitNode`. All nodes are killed again when
    any step fails.
    """
    if count < 1:
        raise ValueError(f"a cluster needs at least 1 node, got {count}")
    node_options.setdefault("cookie", secrets.token_hex(20))
    node_options.setdefault("admin_password", secrets.token_urlsafe(18))
    nodes = [RabbitNode(**node_options) for _ in range(count)]
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_until_ready()
        for node in nodes[1:]:
            node.rabbitmqctl("stop_app")
            node.rabbitmqctl("join_cluster", nodes[0].node_name)
            node.rabbitmqctl("start_app")
            node.wait_until_ready()
    except BaseException:
        for node in nodes:
            node.cleanup()
        raise
    return nodes
