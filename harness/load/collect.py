"""Histories of Locust workers on other hosts, carried over Locust's own messages (issue 14).

A worker started with `harness worker --master HOST:PORT` shares no filesystem with the harness. Its
customers' history lines travel to the master in batches of Locust custom messages (MSG_HISTORY) on
the connection Locust already keeps; the master's handler (`Spool.receive`) only appends the bytes
to files of the run directory and counts them, so it never holds up the master's heartbeats. Before
a worker sends a payment it *reserves* its id: a batch of upcoming payments (id, payer, payee,
amount, scheduled time) sent ahead of them, so when a worker dies (kill -9) the harness knows which
payments it may have sent without ever reporting them.

Files the master writes in the run directory, per worker `wN` (a name it gives in order of joining):

    history.wN.jsonl    the worker's history lines, as they arrived (merged into history.jsonl)
    reserved.wN.jsonl   the payments it reserved (one JSON object a line)
    load.wN.json        its open-model generator's figures (merged into load.json, harness/loadfile.py)
    workers.json        per worker: client id, batches, lines, last heard, final batch seen or not

After Locust exits, `reckon(run_dir)` (harness/load/control.py calls it before merging) finds the
workers that never sent their final batch (lost), or whose final batch declares more lines or
reservations than arrived (a batch lost on the way: `incomplete`), records every payment such a worker reserved and
scheduled before it was last heard from, yet never reported, as an unknown outcome (error
`worker-lost`: it may or may not have reached its bank), and returns what was lost; control.py puts
that into load.json, from where the checkers put it into result.json. No Locust here.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson

# Master -> workers, in the master's options that Locust sends with every spawn: system.json's text,
# and how many arrival generators (slices of the open model's schedule) there are.
OPT_SYSTEM, OPT_SLICES = "payswitch_system", "payswitch_slices"
MSG_HISTORY = "payswitch_history"  # worker -> master: one batch (see Spool.receive)
MSG_STOP = "payswitch_stop"  # master -> worker: stop the customers now and send the final batch
WORKERS_FILE = "workers.json"
LOST_ERROR = "worker-lost"
# Payments reserved but scheduled more than this after a lost worker was last heard from were not
# sent by it (it was dead by then): counted, not recorded. Locust's heartbeat interval is 1 s.
HEARD_SLACK_S = 2.0


def history_part(run_dir: Path, name: str) -> Path:
    return run_dir / f"history.{name}.jsonl"


def reserved_part(run_dir: Path, name: str) -> Path:
    return run_dir / f"reserved.{name}.jsonl"


def figures_part(run_dir: Path, name: str) -> Path:
    return run_dir / f"load.{name}.json"


def is_worker_name(part: str) -> bool:
    """`w` and digits: a remote worker's name (as in history.w3.jsonl)."""
    return part[:1] == "w" and part[1:].isdigit()


class Spool:
    """The master's side: appends each batch to the worker's files and keeps its counts. Cheap by
    design (no JSON parsing, no fsync): it runs in the greenlet that also reads heartbeats."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.names: dict[str, str] = {}  # Locust client id -> wN
        self.workers: dict[str, dict[str, Any]] = {}  # wN -> its figures (workers.json)
        self._files: dict[tuple[str, str], IO[bytes]] = {}

    def name_for(self, client_id: str, index: int | None = None) -> str:
        """The worker's name: w(Locust's worker index + 1), which the worker knows too; the same for
        the same client id."""
        name = self.names.get(client_id)
        if name is None:
            name = self.names[client_id] = f"w{(index if index is not None else len(self.names)) + 1}"
            self.workers[name] = {
                "name": name,
                "client_id": client_id,
                "joined_at": time.time(),
                "last_heard": time.time(),
                "batches": 0,
                "last_seq": 0,
                "lines": 0,
                "reserved": 0,
                "final": False,
                "generator_done": False,
                "seq_gaps": 0,
                "duplicates": 0,
                "declared_lines": None,  # what the worker says it sent, with its final batch
                "declared_reserved": None,
            }
            self.save(stopped=False)  # so a master killed before the test stops still leaves who joined
        return name

    def heard(self, client_id: str) -> None:
        name = self.names.get(client_id)
        if name is not None:
            self.workers[name]["last_heard"] = time.time()

    def receive(self, client_id: str, data: Mapping[str, Any], index: int | None = None) -> None:
        """One batch: {"seq": n (1, 2, ...), "lines": bytes (history lines, newline-ended), "n": k,
        "reserve": bytes (reserved payments, newline-ended), "r": k, "figures": dict | None,
        "done": the generator played its schedule, "final": the worker's last batch, "sent_lines" /
        "sent_reserved": (final batches) how many lines and reservations the worker has sent in all}.
        A batch whose seq was seen already is dropped (counted in `duplicates`): its lines are in."""
        name = self.name_for(client_id, index)
        w = self.workers[name]
        w["last_heard"] = time.time()
        seq = int(data.get("seq", 0))
        if 0 < seq <= w["last_seq"]:
            w["duplicates"] += 1
            return
        if seq != w["last_seq"] + 1:
            w["seq_gaps"] += 1  # never on one ordered connection; kept to prove it
        w["last_seq"] = max(w["last_seq"], seq)
        w["batches"] += 1
        if reserve := data.get("reserve"):
            self._write(name, "reserved", reserve)
            w["reserved"] += int(data.get("r", 0))
        if lines := data.get("lines"):
            self._write(name, "history", lines)
            w["lines"] += int(data.get("n", 0))
        if (figures := data.get("figures")) is not None:
            figures_part(self.run_dir, name).write_bytes(orjson.dumps(figures))
        w["generator_done"] = w["generator_done"] or bool(data.get("done"))
        w["final"] = w["final"] or bool(data.get("final"))
        if data.get("sent_lines") is not None:
            w["declared_lines"] = int(data["sent_lines"])
            w["declared_reserved"] = int(data.get("sent_reserved") or 0)

    def _write(self, name: str, kind: str, data: bytes) -> None:
        f = self._files.get((name, kind))
        if f is None:
            path = history_part(self.run_dir, name) if kind == "history" else reserved_part(self.run_dir, name)
            f = self._files[(name, kind)] = path.open("ab")
        f.write(data)
        f.flush()  # to the OS: the harness counts operations from these files while the run goes

    def save(self, missing: set[str] | frozenset[str] = frozenset(), stopped: bool = True) -> Path:
        """Write workers.json; `missing`: Locust client ids the master saw go silent; `stopped`: the
        master is stopping the test (False: a worker joined)."""
        for client_id, name in self.names.items():
            self.workers[name]["missing"] = client_id in missing
            self.workers[name]["master_stopped"] = stopped
        path = self.run_dir / WORKERS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self.workers.values()), indent=2))
        tmp.replace(path)
        return path

    def close(self) -> None:
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        self._files.clear()


def _ids(path: Path) -> set[str]:
    """Ids of the payments with a payment line (a name enquiry alone does not say whether the
    payment was sent: the worker may have died between the two)."""
    found: set[str] = set()
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for line in f:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                op = orjson.loads(line)
                if op.get("op", "payment") == "payment":
                    found.add(str(op["id"]))
    return found


def incomplete(w: Mapping[str, Any]) -> bool:
    """A worker that sent its final batch, saying it sent more lines or reservations than arrived."""
    declared_lines, declared_reserved = w.get("declared_lines"), w.get("declared_reserved")
    return bool(w.get("final")) and (
        (declared_lines is not None and int(declared_lines) > int(w.get("lines", 0)))
        or (declared_reserved is not None and int(declared_reserved) > int(w.get("reserved", 0)))
    )


def _mtimes(*paths: Path) -> list[float]:
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            found.append(path.stat().st_mtime)
    return found


def reckon(run_dir: Path) -> dict[str, Any] | None:
    """After the run: which workers were lost (or `incomplete`) and what of theirs is not in the
    history. Appends an unknown `worker-lost` payment line for each payment such a worker reserved,
    scheduled no later than HEARD_SLACK_S after it was last heard from, and never reported; rewrites
    workers.json with the figures. None when the run had no remote workers."""
    path = run_dir / WORKERS_FILE
    try:
        workers: list[dict[str, Any]] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    lost: list[dict[str, Any]] = []
    for w in workers:
        if (w.get("final") and not incomplete(w)) or "unreported" in w:
            continue
        name = str(w["name"])
        reported = _ids(history_part(run_dir, name))
        if not w.get("master_stopped", True):
            # The master died before it saved workers.json at the stop; it wrote each batch as it
            # came, so its files say when it last heard from the worker.
            parts = (history_part(run_dir, name), reserved_part(run_dir, name))
            w["last_heard"] = max([float(w.get("last_heard", 0.0)), *_mtimes(*parts)])
        cutoff = float(w.get("last_heard", 0.0)) + HEARD_SLACK_S
        recorded = not_started = 0
        lines: list[bytes] = []
        with contextlib.suppress(FileNotFoundError), reserved_part(run_dir, name).open("rb") as f:
            for raw in f:
                try:
                    r = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if r["id"] in reported:
                    continue
                invoke = float(r["invoke"])
                if invoke > cutoff:
                    not_started += 1
                    continue
                recorded += 1
                complete = max(invoke, float(w.get("last_heard", invoke)))
                op = {
                    "op": "payment", "id": r["id"], "payer": r["payer"], "payee": r["payee"],
                    "amount": r["amount"], "invoke": invoke, "sent": invoke, "complete": complete,
                    "outcome": "unknown", "status": None, "reason": None, "http": None, "error": LOST_ERROR,
                    "latency_ms": round((complete - invoke) * 1000, 3), "worker": name,
                }  # fmt: skip
                lines.append(orjson.dumps(op) + b"\n")
        if lines:
            with history_part(run_dir, name).open("ab") as out:
                out.writelines(lines)
        w["unreported"] = recorded
        w["not_started"] = not_started
        lost.append(
            {
                "name": name,
                "client_id": w.get("client_id"),
                "incomplete": incomplete(w),  # finished, but a batch of it never arrived
                "master_lost": not w.get("master_stopped", True),  # the master ended before the stop
                "last_heard": w.get("last_heard"),
                "lines_received": w.get("lines", 0),
                "unreported": recorded,
                "not_started": not_started,
            }
        )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(workers, indent=2))
    tmp.replace(path)
    return {
        "workers": [w["name"] for w in workers],
        "lost_workers": lost,
        "unreported": sum(x["unreported"] for x in lost),
    }


def describe_lost(lost: Mapping[str, Any]) -> str:
    """One line for people: which worker, how many of its payments are not in the history."""
    what = "lost batches of its history" if lost.get("incomplete") else "was lost mid-run"
    if lost.get("master_lost"):
        what = "had not sent its final batch when Locust's master ended (killed or crashed)"
    return (
        f"Locust worker {lost['name']} ({lost.get('client_id') or 'unknown host'}) {what}:"
        f" {lost['unreported']:,} payments it had started are not in its reported history and are recorded"
        f" as unknown (error {LOST_ERROR}); {lost.get('not_started', 0):,} it had reserved were never started"
    )
