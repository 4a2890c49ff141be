"""Locustfile of benchmarks/worker_messages.py: workers send history batches as fast as they can; the
master spools them with the harness's own handler (harness/load/collect.py) and times heartbeats."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
import orjson
from locust import User, events, task
from locust.runners import MasterRunner, WorkerRunner

from harness.load import collect

LINE = orjson.dumps({
    "op": "payment", "id": "r6b145663-w1-a0000123", "payer": "BNKA", "payee": "BNKB", "amount": 12345,
    "invoke": 1796494949.1, "sent": 1796494949.1, "complete": 1796494949.2, "outcome": "ok", "status": "ACSC",
    "reason": None, "http": 200, "error": None, "latency_ms": 12.3,
})  # fmt: skip
BATCH = int(os.environ.get("BENCH_BATCH", "500"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
OUT = Path(os.environ.get("BENCH_OUT", "/tmp/bench-workers"))
beats: dict[str, list[float]] = {}


class Idle(User):
    @task
    def nothing(self) -> None:
        gevent.sleep(1)


def blast(runner: WorkerRunner) -> None:
    data = b"".join(LINE + b"\n" for _ in range(BATCH))
    end, seq = time.time() + SECONDS, 0
    while time.time() < end:
        seq += 1
        runner.send_message(collect.MSG_HISTORY, {"seq": seq, "lines": data, "n": BATCH, "reserve": b"", "r": 0})
        gevent.sleep(0)


@events.init.add_listener
def on_init(environment: Any, **_kw: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        spool = collect.Spool(OUT)

        def on_batch(environment: Any, msg: Any, **_k: Any) -> None:
            spool.receive(msg.node_id, msg.data)

        def on_beat(client_id: str, timestamp: float, **_k: Any) -> None:
            beats.setdefault(client_id, []).append(timestamp)

        runner.register_message(collect.MSG_HISTORY, on_batch)
        environment.events.heartbeat_sent.add_listener(on_beat)

        def report() -> None:
            gevent.sleep(SECONDS + 3)
            gaps = [b - a for ts in beats.values() for a, b in itertools.pairwise(ts)]
            lines = sum(w["lines"] for w in spool.workers.values())
            first = min(w["joined_at"] for w in spool.workers.values())
            out = {
                "lines": lines,
                "lines_per_s": round(lines / SECONDS),
                "max_heartbeat_gap_s": round(max(gaps or [0]), 2),
                "missing": [c.id for c in runner.clients.all if c.state == "missing"],
                "since_join_s": round(time.time() - first, 1),
            }
            print("BENCH " + json.dumps(out), flush=True)
            runner.quit()

        gevent.spawn(report)
    elif isinstance(runner, WorkerRunner):
        events.test_start.add_listener(lambda **_k: gevent.spawn(blast, runner))
