"""The power-loss layer (harness/testbed/powerloss.py): a kill -9 that also loses what was written
but never fsynced. Proven on raw files, on SQLite's two synchronous modes, and on the real services:
`durability: os` loses acknowledged payments under it, `durability: fsync` loses none."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support import eventually

from harness.checkers.reconcile import reconcile
from harness.errors import FaultError, ScenarioError, TestbedError
from harness.faults import FaultSpec, losing_power
from harness.ledgers import Snapshot
from harness.load.customers import Outcome, drive
from harness.nemesis import Nemesis
from harness.observe import snapshot
from harness.scenario import parse
from harness.testbed import make_testbed, powerloss
from harness.testbed.local import LocalTopology, TopologyError
from harness.testbed.powerloss import PowerLossLayer
from harness.testbed.system import build_system
from mock_switch.config import Durability


def _need_layer() -> None:
    why = powerloss.problem()
    if why is None:
        return
    if os.environ.get("HARNESS_REQUIRE_POWERLOSS") == "1":
        pytest.fail(f"HARNESS_REQUIRE_POWERLOSS=1 and {why}", pytrace=False)
    pytest.skip(f"{why} (set HARNESS_REQUIRE_POWERLOSS=1 to fail instead)")


@pytest.fixture
def layer(tmp_path: Path) -> PowerLossLayer:
    _need_layer()
    return PowerLossLayer(tmp_path / "data", tmp_path / "undo")


def run_then_power_off(layer: PowerLossLayer, script: str, *args: str) -> str:
    """Run `script` under the layer until it prints 'ready', kill -9 it; what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **layer.env()},
    )
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:  # the child sleeps after "ready"; the kill below ends it either way
            lines.append(line)
            if line.startswith("ready"):
                break
        assert lines and lines[-1].startswith("ready"), f"the child did not get ready: {lines}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return "".join(lines)


FILES = """
import os, sys, time
data, outside = sys.argv[1], sys.argv[2]
def opened(name, where=data):
    return os.open(os.path.join(where, name), os.O_RDWR | os.O_CREAT, 0o644)
a = opened("a")                      # synced, then overwritten, extended and cut, never synced again
os.write(a, b"A" * 100); os.fsync(a)
os.pwrite(a, b"B" * 50, 10); os.write(a, b"C" * 200); os.ftruncate(a, 30)
b = opened("b")                      # never synced: emptied
os.write(b, b"X" * 10)
c = opened("c")                      # synced with fdatasync, then cut to nothing and rewritten
os.write(c, b"keep"); os.fdatasync(c)
os.ftruncate(c, 0); os.pwrite(c, b"lost!", 0)
d = opened("d")                      # synced last: kept whole
os.write(d, b"D" * 10); os.pwrite(d, b"E" * 5, 20); os.fsync(d)
s = opened("x.db-shm")               # memory shared through a file: not storage, not recorded
os.write(s, b"S" * 8)
o = opened("o", outside)             # outside the data directory: not the layer's business
os.write(o, b"O" * 8)
print("ready", flush=True)
time.sleep(60)
"""


def test_unsynced_writes_are_lost_and_synced_ones_kept(layer: PowerLossLayer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer.data_dir.mkdir(parents=True)
    run_then_power_off(layer, FILES, str(layer.data_dir), str(outside))
    data = layer.data_dir
    assert (data / "a").read_bytes() == b"A" * 10 + b"B" * 20  # before the power loss: the page cache
    dropped = layer.drop_unsynced()
    assert (data / "a").read_bytes() == b"A" * 100
    assert (data / "b").read_bytes() == b""
    assert (data / "c").read_bytes() == b"keep"
    assert (data / "d").read_bytes() == b"D" * 10 + b"\0" * 10 + b"E" * 5
    assert (data / "x.db-shm").read_bytes() == b"S" * 8
    assert (outside / "o").read_bytes() == b"O" * 8
    assert dropped.changes == {"a": 3, "b": 1, "c": 2}
    assert dropped.written == {"a": 250, "b": 10, "c": 5}
    assert layer.undo_log.read_bytes() == b""  # what is left is synced: nothing more to undo
    assert layer.drop_unsynced().total_changes == 0  # and a second power loss takes nothing


def test_the_undo_log_is_emptied_when_everything_is_synced(layer: PowerLossLayer) -> None:
    script = """
    import os, sys, time
    f = os.open(os.path.join(sys.argv[1], "f"), os.O_RDWR | os.O_CREAT, 0o644)
    for i in range(100):
        os.pwrite(f, b"x" * 4096, 0)
        os.fsync(f)
    print("ready", os.path.getsize(sys.argv[2]), flush=True)
    time.sleep(60)
    """
    layer.data_dir.mkdir(parents=True)
    out = run_then_power_off(layer, script, str(layer.data_dir), str(layer.undo_log))
    assert out.split() == ["ready", "0"], "a log holding only synced changes must stay empty"


def test_a_plain_crash_in_between_forgets_nothing(layer: PowerLossLayer) -> None:
    """A service killed (no power loss) and started again inherits its undo log: what its first life
    left unsynced is still lost at a later power loss, though its second life synced other files."""
    first = """
    import os, sys, time
    a = os.open(os.path.join(sys.argv[1], "a"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(a, b"synced"); os.fsync(a); os.pwrite(a, b"SYNCED", 0)
    print("ready", flush=True)
    time.sleep(60)
    """
    second = """
    import os, sys, time
    b = os.open(os.path.join(sys.argv[1], "b"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(b, b"b"); os.fsync(b)
    print("ready", flush=True)
    time.sleep(60)
    """
    layer.data_dir.mkdir(parents=True)
    run_then_power_off(layer, first, str(layer.data_dir))  # a crash: nothing dropped
    run_then_power_off(layer, second, str(layer.data_dir))
    assert (layer.data_dir / "a").read_bytes() == b"SYNCED"
    assert layer.drop_unsynced().changes == {"a": 1}
    assert (layer.data_dir / "a").read_bytes() == b"synced"
    assert (layer.data_dir / "b").read_bytes() == b"b"


SQLITE = """
import os, sqlite3, sys, time
db = sqlite3.connect(os.path.join(sys.argv[1], "t.db"), isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute(f"PRAGMA synchronous={sys.argv[2]}")
db.execute("CREATE TABLE t(i INTEGER PRIMARY KEY)")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table is in the database file, synced
db.execute("PRAGMA wal_autocheckpoint=0")      # no checkpoint syncs the WAL behind NORMAL's back
for i in range(200):
    db.execute("INSERT INTO t(i) VALUES (?)", (i,))  # each insert a commit: acknowledged when it returns
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("synchronous", "survive"), [("NORMAL", 0), ("FULL", 200)])
def test_sqlite_commits_survive_only_if_fsynced(
    layer: PowerLossLayer, synchronous: str, survive: int, tmp_path: Path
) -> None:
    """synchronous=NORMAL in WAL mode (`durability: os`) commits without fsync: all 200 commits are
    lost; FULL (`durability: fsync`) syncs the WAL at each commit: all 200 survive."""
    layer.data_dir.mkdir(parents=True)
    run_then_power_off(layer, SQLITE, str(layer.data_dir), synchronous)
    # A plain kill -9 loses nothing: a copy of the files as the kill left them has every row. (The
    # copy is read, not the files: a reader's close would checkpoint, and sync, the WAL.)
    kept = shutil.copytree(layer.data_dir, tmp_path / "after-kill")
    assert rows(kept / "t.db") == 200
    layer.drop_unsynced()
    assert rows(layer.data_dir / "t.db") == survive  # the -shm left by the killed writer is rebuilt


def rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


def test_the_fault_kind_is_local_only(tmp_path: Path) -> None:
    fault = FaultSpec(name="cut", kind="power_loss", targets=["switch"], start=1, duration=1)
    assert losing_power([fault]) == ["switch"]
    with pytest.raises(ScenarioError, match="power_loss needs the local backend"):
        parse(
            {
                "name": "x",
                "backend": "docker",
                "load": {"rate": 5, "duration": 5},
                "faults": [{"kind": "power_loss", "targets": "switch", "start": 1, "duration": 1}],
            },
            "x.yaml",
        )
    with pytest.raises(TestbedError, match="docker backend has no power-loss layer"):
        make_testbed(build_system(banks=2), tmp_path, "docker", power_loss=["switch"])


def test_a_service_not_under_the_layer_refuses_the_fault(tmp_path: Path) -> None:
    topo = LocalTopology(build_system(banks=2), tmp_path)
    with pytest.raises(TopologyError, match="not started under the power-loss layer"):
        topo.services["switch"].power_loss()
    with pytest.raises(TopologyError, match="the services are"):
        LocalTopology(build_system(banks=2), tmp_path, power_loss=["ZZZZ"])


def test_no_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert "no C compiler" in (powerloss.problem() or "")
    with pytest.raises(TestbedError, match="apt-get install gcc"):
        powerloss.library()


class _Services:
    """A backend without a power-loss layer (docker's, say)."""

    service_names = ["switch"]


def test_nemesis_refuses_power_loss_on_a_backend_without_it(tmp_path: Path) -> None:
    nemesis = Nemesis(None, {}, _Services(), tmp_path / "faults.jsonl")  # type: ignore[arg-type]
    fault = FaultSpec(name="cut", kind="power_loss", targets=["switch"], start=0, duration=1)
    with pytest.raises(FaultError, match="cannot cut a service's power"):
        nemesis.apply(fault)
    nemesis.close()


# -- the real services ------------------------------------------------------------------------------


def _undo_bytes(topo: LocalTopology, victim: str) -> int:
    log = topo.services[victim].layer.undo_log  # type: ignore[union-attr]
    return log.stat().st_size if log.exists() else 0


def power_loss_under_load(
    victim: str, durability: Durability, run_dir: Path, power: bool = True
) -> tuple[list[Outcome], LocalTopology, dict[str, object]]:
    """Load, then a power loss of `victim` (with `power=False` a plain kill -9), then its restart."""
    system = build_system(banks=3, accounts=200, durability=durability, status_query={"initial_s": 0.05, "max_s": 0.3})
    topo = LocalTopology(system, run_dir, power_loss=[victim])
    topo.start()
    urls = {code: topo.bank(code).url for code in topo.bank_codes}
    results: list[Outcome] = []

    def load() -> None:
        results.extend(asyncio.run(drive(topo.system, urls, seconds=4.0, concurrency=24, prefix=f"pl-{victim}")))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(1.0)  # load under way, so the power goes with payments in flight
        if durability == "os":
            # Commits pile up unsynced until SQLite's next checkpoint: cut the power once a good
            # number of them wait (not on timing luck), so the loss is certain, not likely.
            eventually(lambda: _undo_bytes(topo, victim) > 64_000 or None, timeout=20, what="unsynced commits")
        if power:
            lost = topo.power_loss(victim)
        else:
            topo.kill(victim)
            lost = {}
        time.sleep(0.3)
        topo.services[victim].start()
        topo.services[victim].wait_healthy()
    finally:
        loader.join(timeout=60)
    assert not loader.is_alive()
    return results, topo, lost


def settled_snapshot(topo: LocalTopology) -> Snapshot:
    """The books once no payment is in doubt (or after 30 s: a loss can leave one in doubt forever)."""
    urls = {code: topo.bank(code).url for code in topo.bank_codes}
    deadline = time.monotonic() + 30
    while True:
        snap = snapshot.take(topo.switch.url, urls)
        pending = [t for t in snap["switch"]["transfers"] if t["status"] == "PDNG"]
        pending += [p for b in snap["banks"].values() for p in b["payments"] if p["status"] == "PDNG"]
        if not pending or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


def acknowledged_lost(results: list[Outcome], snap: Snapshot) -> list[str]:
    """Payments the customer was told were done (ACSC) that some ledger does not hold as done."""
    payments = {p["payment_id"]: p for b in snap["banks"].values() for p in b["payments"]}
    credits = {c["payment_id"]: c for b in snap["banks"].values() for c in b["credits"]}
    transfers = {t["payment_id"]: t for t in snap["switch"]["transfers"]}
    return [
        r.payment_id
        for r in results
        if r.status == "ACSC"
        and (
            payments.get(r.payment_id, {}).get("status") != "ACSC"
            or transfers.get(r.payment_id, {}).get("status") != "ACSC"
            or credits.get(r.payment_id, {}).get("status") != "ACCP"
        )
    ]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["switch", "BNKB"])
@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_power_loss_catches_acknowledging_before_fsync(victim: str, durability: Durability, tmp_path: Path) -> None:
    _need_layer()
    results, topo, lost = power_loss_under_load(victim, durability, tmp_path)
    try:
        snap = settled_snapshot(topo)
    finally:
        topo.stop()
    acked = [r for r in results if r.status == "ACSC"]
    assert len(acked) > 100, "too little load to prove anything"
    gone = acknowledged_lost(results, snap)
    books = reconcile(snap, topo.system.total_customer_money(), topo.system.total_settlement_money())
    if durability == "os":
        assert isinstance(lost["changes"], int) and lost["changes"] > 0, lost
        assert gone or not books.ok, f"a power loss under durability: os went unnoticed; it undid {lost}"
    else:
        assert gone == [], f"acknowledged payments lost under durability: fsync: {gone[:5]} ({lost})"
        assert books.ok, books.summary()


@pytest.mark.slow
def test_a_plain_kill_cannot_tell_os_from_fsync(tmp_path: Path) -> None:
    """The control: the same run with a kill -9 instead of a power loss, under `durability: os`,
    loses nothing (the page cache keeps the unsynced commits), so it is the layer that catches it."""
    _need_layer()
    results, topo, _ = power_loss_under_load("switch", "os", tmp_path, power=False)
    try:
        snap = settled_snapshot(topo)
    finally:
        topo.stop()
    assert len([r for r in results if r.status == "ACSC"]) > 100, "too little load to prove anything"
    assert acknowledged_lost(results, snap) == []
    books = reconcile(snap, topo.system.total_customer_money(), topo.system.total_settlement_money())
    assert books.ok, books.summary()
