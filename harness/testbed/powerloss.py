"""The power-loss layer: a service whose data directory can lose what it wrote but never fsynced.

A kill -9 leaves the operating system's page cache alone, so a crash cannot tell a service that
fsyncs before it acknowledges from one that does not. Under this layer it can. The service runs
with a small recorder preloaded (powerloss_shim.c, built here with the system's C compiler and
cached): before each write or truncate of a file in its data directory the recorder appends the
bytes about to be overwritten to an undo log, and after each successful fsync/fdatasync of a file a
sync mark. A power loss (`power_loss` fault) is then: kill -9 the service, undo, newest first,
every change of each file made since that file's last sync mark (`drop_unsynced`), restart. The
files are as a machine that lost power would find them if none of the unsynced data had reached
the disk, the strict model Jepsen's LazyFS uses by default.

Why a preloaded recorder rather than a FUSE filesystem: no mount to leak when the harness dies
(nothing to clean up but files in the run directory), no root, no kernel page cache between the
service and its files to go stale after the undo, and the same real files and syscalls otherwise.
The undo log is emptied by the recorder whenever every file is synced, so it holds only what a power
loss would take. What it does not model: writes through mmap (SQLite's -shm wal-index, rebuilt
after a crash, is not recorded at all),
writev/fallocate (SQLite does not use them), directory entries (a file created but never
dir-synced stays, emptied back), and torn sectors (a change is undone whole or not at all).

    layer = PowerLossLayer(data_dir, undo_log)
    env = {**os.environ, **layer.env()}   # start the service with this
    ...                                   # kill -9 it, then:
    dropped = layer.drop_unsynced()       # the files as after a power loss
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import TestbedError

SOURCE = Path(__file__).with_name("powerloss_shim.c")
INSTALL_HINT = "install a C compiler (Debian: apt-get install gcc) or set CC to one"
# type, padding, dev, ino, pos, count, old_size, n: see the layout comment in powerloss_shim.c.
_RECORD = struct.Struct("=c7x6q")


def problem() -> str | None:
    """Why the layer cannot be used on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return f"the power-loss layer needs Linux (LD_PRELOAD and /proc/self/fd), not {sys.platform}"
    if _compiler() is None:
        return f"the power-loss layer is built from C and no C compiler was found; {INSTALL_HINT}"
    return None


def interactive(backend: str, services: list[str]) -> list[str]:
    """The services an interactive session (`harness ui`, `harness up`) starts under the layer: all
    of them where it can be built, so the Chaos tab's power_loss works; none elsewhere (the fault
    is then refused, saying why)."""
    return list(services) if backend == "local" and problem() is None else []


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("cc") or shutil.which("gcc")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "payswitch-chaos"


def library() -> Path:
    """The recorder, built once per source version (a compiled copy is cached); TestbedError when it
    cannot be built."""
    why = problem()
    if why is not None:
        raise TestbedError("a power_loss fault cannot be done here: " + why.split("; ")[0], fix=INSTALL_HINT)
    source = SOURCE.read_bytes()
    target = _cache_dir() / f"powerloss-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TestbedError(
            f"cannot keep the power-loss recorder in {target.parent}: {exc}",
            fix="set XDG_CACHE_HOME to a writable folder",
        ) from exc
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    cc = _compiler()
    assert cc is not None  # problem() said so
    done = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise TestbedError(
            f"could not build the power-loss recorder from {SOURCE} with {cc}: {done.stderr.strip()[-500:]}",
            fix=INSTALL_HINT,
        )
    os.replace(tmp, target)  # atomic: a concurrent build of the same source writes the same file
    return target


@dataclass
class Dropped:
    """What a power loss took: per file (relative to the data directory), the changes undone and the
    bytes they had written."""

    changes: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)

    @property
    def total_changes(self) -> int:
        return sum(self.changes.values())

    @property
    def total_written(self) -> int:
        return sum(self.written.values())

    def as_dict(self) -> dict[str, object]:
        return {"changes": self.total_changes, "bytes": self.total_written, "files": dict(self.changes)}

    def summary(self) -> str:
        files = ", ".join(f"{name} ({n})" for name, n in sorted(self.changes.items())) or "none"
        return f"undid {self.total_changes} unsynced changes ({self.total_written} bytes written) of files: {files}"


@dataclass(frozen=True)
class _Change:
    kind: bytes  # b"W" or b"T"
    pos: int
    count: int
    old_size: int
    old: bytes


@dataclass
class PowerLossLayer:
    """One service's data directory under the layer, and its undo log."""

    data_dir: Path
    undo_log: Path

    def env(self) -> dict[str, str]:
        """What to add to the service's environment (builds the recorder if needed)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.undo_log.parent.mkdir(parents=True, exist_ok=True)
        preload = str(library())
        previous = os.environ.get("LD_PRELOAD")
        return {
            "LD_PRELOAD": f"{preload}:{previous}" if previous else preload,
            "PAYSWITCH_POWERLOSS_DIR": str(self.data_dir.resolve()),
            "PAYSWITCH_POWERLOSS_LOG": str(self.undo_log.resolve()),
            # SQLite's wal-index: shared memory in a file, written through mmap, rebuilt from the WAL
            # by the first connection after a crash. Not storage, so not recorded.
            "PAYSWITCH_POWERLOSS_VOLATILE": "-shm",
        }

    def drop_unsynced(self) -> Dropped:
        """Undo every change made since each file's last sync. Only while the service is dead (the
        caller has killed it and waited). The log starts again empty: what is left is synced."""
        pending = self._pending()
        by_identity = self._files()
        dropped = Dropped()
        for identity, changes in pending.items():
            path = by_identity.get(identity)
            if path is None or not changes:
                continue  # deleted since: nothing of it to find after the power loss either
            with path.open("r+b") as f:
                for change in reversed(changes):
                    if change.kind == b"T" or change.pos + change.count > change.old_size:
                        f.truncate(change.old_size)
                    if change.old:
                        f.seek(change.pos)
                        f.write(change.old)
                f.flush()
                os.fsync(f.fileno())  # the undo itself is on disk before the service starts again
            name = str(path.relative_to(self.data_dir))
            dropped.changes[name] = len(changes)
            dropped.written[name] = sum(c.count for c in changes)
        self.undo_log.write_bytes(b"")
        return dropped

    def _pending(self) -> dict[tuple[int, int], list[_Change]]:
        """Per file (device, inode): the changes since its last sync mark, oldest first."""
        pending: dict[tuple[int, int], list[_Change]] = {}
        if not self.undo_log.exists():
            return pending
        data = self.undo_log.read_bytes()
        at = 0
        while at + _RECORD.size <= len(data):
            kind, dev, ino, pos, count, old_size, n = _RECORD.unpack_from(data, at)
            end = at + _RECORD.size + n
            if end > len(data):
                break  # cut short by the kill: its change was never made (the record comes first)
            identity = (dev, ino)
            if kind == b"S":
                pending.pop(identity, None)
            elif kind in (b"W", b"T"):
                old = data[at + _RECORD.size : end]
                pending.setdefault(identity, []).append(_Change(kind, pos, count, old_size, old))
            else:
                raise TestbedError(
                    f"{self.undo_log}: unknown record type {kind!r} at byte {at}",
                    fix="the recorder and harness/testbed/powerloss.py disagree on the format; rebuild",
                )
            at = end
        return pending

    def _files(self) -> dict[tuple[int, int], Path]:
        out: dict[tuple[int, int], Path] = {}
        for root, _dirs, files in os.walk(self.data_dir):
            for name in files:
                path = Path(root) / name
                st = path.lstat()
                out[(st.st_dev, st.st_ino)] = path
        return out
