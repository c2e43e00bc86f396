"""The sidecar mode: wait for the broker, sync, then exit or keep reconciling.

With ``reconcile_interval`` 0 (the default, right for a 256 MB VM) the
process exits after the first sync and costs no memory afterwards. With an
interval it re-syncs every N seconds, so an account deleted by hand comes
back, and re-reads the users file on SIGHUP or when its modification time
changes. A file that turns invalid is reported and the last valid one stays
in force, so a bad edit never removes what was declared. SIGTERM and SIGINT
end the loop at the next wait, mid-wait included. When entrypoint.sh passes
the broker's PID, the loop also ends once that process is gone: the broker's
stop signal never reaches the sidecar, which would otherwise outlive it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from types import FrameType

from provisioner.client import ManagementClient
from provisioner.errors import InvalidInput, ProvisionerError
from provisioner.report import summary
from provisioner.runner import Declared, connect, load_declared, sync
from provisioner.settings import Settings

log = logging.getLogger(__name__)

# How often the loop looks at the file's modification time between cycles.
FILE_POLL_SECONDS = 1.0


class Stopped(Exception):
    """A stop signal arrived while the sidecar was waiting."""


@dataclass
class Signals:
    """Flags set from signal handlers and read by the loop.

    ``broker_pid``, when set, makes every sleep also stop the sidecar once
    that process is gone, including the waits for a broker that went down.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    reload: threading.Event = field(default_factory=threading.Event)
    broker_pid: int | None = None

    def install(self) -> None:
        """Route SIGTERM/SIGINT to ``stop`` and SIGHUP to ``reload``."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def sleep(self, seconds: float) -> None:
        """Sleep, but raise Stopped on a stop signal or once the broker is gone."""
        if self.stop.wait(seconds):
            raise Stopped
        if _process_exited(self.broker_pid):
            log.info("the broker (PID %s) has exited; stopping", self.broker_pid)
            raise Stopped

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        log.info("received SIGHUP; the users file will be read again")
        self.reload.set()


def serve(settings: Settings, signals: Signals | None = None) -> int:
    """Run the sidecar and return 0 once it is done or stopped.

    A failure of the first sync raises, so the caller's exit code reaches the
    container's entrypoint; failures of later cycles are logged and retried.
    """
    signals = signals or Signals(broker_pid=settings.broker_pid)
    client = connect(settings)
    try:
        declared = load_declared(settings)
        _cycle(client, declared, settings, signals, quiet=False)
        if settings.reconcile_interval <= 0:
            return 0
        _loop(client, declared, settings, signals)
    except Stopped:
        log.info("stopped")
    return 0


def _loop(
    client: ManagementClient, declared: Declared, settings: Settings, signals: Signals
) -> None:
    seen = _mtime(settings)
    waited = 0.0
    while True:
        signals.sleep(FILE_POLL_SECONDS)
        waited += FILE_POLL_SECONDS
        changed = _mtime(settings) != seen
        if not (
            changed or signals.reload.is_set() or waited >= settings.reconcile_interval
        ):
            continue
        if changed or signals.reload.is_set():
            signals.reload.clear()
            seen = _mtime(settings)
            declared = _reload(settings, declared)
        waited = 0.0
        try:
            _cycle(client, declared, settings, signals, quiet=True)
        except ProvisionerError as error:
            # The loop outlives a failed cycle; the next one retries.
            log.error("reconcile cycle failed: %s", error)


def _reload(settings: Settings, current: Declared) -> Declared:
    try:
        fresh = load_declared(settings)
    except InvalidInput as error:
        log.error("%s; keeping the last valid users file in force", error)
        return current
    log.info("loaded %s (%d users)", settings.users_file, len(fresh.state.users))
    return fresh


def _cycle(
    client: ManagementClient,
    declared: Declared,
    settings: Settings,
    signals: Signals,
    *,
    quiet: bool,
) -> None:
    changes = sync(client, declared, settings, sleep=signals.sleep)
    if not changes:
        log.log(logging.DEBUG if quiet else logging.INFO, "%s", summary(changes))
        return
    log.info("%s", summary(changes).replace("Plan:", "Applied:"))


def _process_exited(pid: int | None) -> bool:
    # NOTE: an exited broker that its parent has not reaped yet still counts
    # as running. In a container the broker is PID 1, so nothing outlives it.
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        # The process exists but belongs to another user.
        return False
    return False


def _mtime(settings: Settings) -> float | None:
    try:
        return settings.users_file.stat().st_mtime
    except OSError:
        return None
