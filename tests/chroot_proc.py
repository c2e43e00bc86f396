"""Share one /proc mount inside a RabbitMQ chroot between running nodes.

RabbitMQ reads /proc for its memory monitor, and without it the 4.0.5
management agent fails at boot (``read_proc_file`` returns ``enoent``), so a
node run from a chroot needs /proc mounted there. Several
nodes, possibly from several test processes, use the same chroot at once,
so each node records itself in a users directory under a file lock, and
only the last node to leave unmounts /proc.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


class ChrootProcMount:
    """Reference-counted mount of /proc at ``ROOT/proc`` for one node."""

    def __init__(self, root: Path, user: str) -> None:
        self.root = root
        self.mount_point = root / "proc"
        self._state_dir = root / "tmp" / "proc-mount-users"
        self._user_file = self._state_dir / f"{os.getpid()}-{user}"
        # Present while /proc is mounted by this class, so a mount made by
        # someone else is never unmounted here.
        self._owned_marker = root / "tmp" / "proc-mount.owned"

    def acquire(self) -> None:
        """Mount /proc unless mounted and record this node as a user."""
        with self._locked():
            if not os.path.ismount(self.mount_point):
                subprocess.run(
                    ["mount", "-t", "proc", "proc", str(self.mount_point)],
                    check=True,
                )
                self._owned_marker.touch()
                logger.info("Mounted proc at %s", self.mount_point)
            self._user_file.touch()

    def release(self) -> None:
        """Forget this node and unmount /proc when no other node uses it.

        A /proc mounted by anything but this class stays mounted.

        A user file left by a crashed process keeps /proc mounted, which
        costs nothing but a mount entry.
        """
        with self._locked():
            self._user_file.unlink(missing_ok=True)
            if any(self._state_dir.iterdir()):
                return
            if self._owned_marker.exists() and os.path.ismount(self.mount_point):
                subprocess.run(["umount", str(self.mount_point)], check=True)
                logger.info("Unmounted proc at %s", self.mount_point)
            self._owned_marker.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self._state_dir.parent / "proc-mount.lock"
        with lock_path.open("w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield
