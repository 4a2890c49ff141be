"""Ports and process groups: the process helpers every part that starts processes shares.

The testbed starts Toxiproxy and the services, the load part starts Locust, the web front end starts
Locust's web UI; each needs a free port, a child that dies with the harness, or a process group
ended without leaving workers behind. They live here, below all of them, so none imports another.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType

# Ports this process has handed out: the kernel may offer a port again as soon as the socket that
# probed it is closed, before the service or proxy it was meant for binds it (a switch and a
# Toxiproxy listener were once given the same port). Bounded: only the recent ones matter.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=4096)
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now and that this process has not handed out recently (the
    kernel's choice; still taken by whoever binds it first, so callers bind with a retry)."""
    with _HANDED_OUT_LOCK:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.append(port)
                return port
        raise OSError(f"no free port on {host} that was not handed out already (64 tries)")


def parent_death_preexec() -> None:
    """Runs in the child before exec: have the kernel SIGTERM it when the harness dies.

    Caution: the signal fires when the *thread* that started the child exits, so only use it for
    processes started from a thread that lives as long as the harness (the main thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG survives exec


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group already gone (or not ours) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def end_stragglers(pgid: int, grace_s: float = 5.0) -> None:
    """End what is left in a process group after its leader is gone (e.g. Locust's workers after a
    crashed master): SIGTERM until the group is empty, SIGKILL after the grace period."""
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while True:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is empty: nothing left behind
        if sig is signal.SIGKILL:
            return
        time.sleep(0.1)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc): with the pid, a token that a
    later process reusing the pid cannot match. None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses, so count from its end.
    return stat[stat.rindex(")") + 2 :].split()[19]


# -- SIGTERM unwinds like Ctrl-C ----------------------------------------------------------------------

EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM): a CI timeout, a service manager, `harness down`


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so every `finally` heals faults and stops what it
    started, exactly as after Ctrl-C."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def sigterm_unwinds() -> None:
    """Make SIGTERM unwind the main thread like Ctrl-C (a no-op outside the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def interrupted_exit(exc: KeyboardInterrupt) -> int:
    """The documented exit code of a run stopped by a signal: 143 after SIGTERM, 130 after Ctrl-C."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


# -- ownership: every process a testbed starts carries its harness's identity --------------------------

# `<pid>:<start time>` of the harness process that started it, in the environment of every service and
# Toxiproxy server: a marker the harness controls (not a process name), that a reused pid cannot fake.
OWNER_ENV = "PAYSWITCH_OWNER"


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{process_start(pid)}"


def owned_env() -> dict[str, str]:
    """The environment for a process this harness starts and must be able to find again."""
    return {**os.environ, OWNER_ENV: owner_token()}


def owner_alive(token: str) -> bool:
    pid, _, started = token.partition(":")
    return pid.isdigit() and process_start(int(pid)) == started


def owned_processes() -> dict[int, str]:
    """Every process (of this user) carrying an owner token, with its token."""
    needle = f"\0{OWNER_ENV}=".encode()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = b"\0" + Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        at = environ.find(needle)
        if at >= 0:
            value = environ[at + len(needle) :].split(b"\0", 1)[0]
            found[int(entry)] = value.decode(errors="replace")
    return found


def reap(pids: list[int]) -> None:
    """SIGCONT (a stopped process holds its port and cannot even die of SIGTERM), then SIGKILL."""
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def reap_orphans(token: str | None = None) -> list[int]:
    """Processes whose harness is gone (or, with `token`, those of that harness): reaped; their pids."""
    doomed = [
        pid
        for pid, owner in owned_processes().items()
        if (owner == token if token is not None else not owner_alive(owner))
    ]
    reap(doomed)
    return doomed
