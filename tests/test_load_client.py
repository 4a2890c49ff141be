"""The customers' HTTP path (harness/load/locustfile.py: Customer.call and Customer.exchange) against
a raw loopback HTTP server that answers each way a bank (or a fault between) can: settled, a business
reject, a 5xx, a body cut off mid-way, no answer within the timeout, a refused connection. What the
customer saw goes to the history and to Locust's statistics, judged by the history's rule.

The locustfile is imported in a child process: Locust monkey-patches the standard library on import."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.history import is_available

ANSWERS = {
    "/payments/ok": (200, b'{"status":"ACSC","reason":null}'),
    "/payments/am04": (422, b'{"status":"RJCT","reason":"AM04"}'),
    "/payments/busy": (503, b'{"detail":"overloaded"}'),
    "/parties/known": (200, b'{"name":"ADA OBI"}'),
    "/parties/unknown": (404, b'{"status":"RJCT","reason":"AC01"}'),
}
CUT = "/payments/cut"  # headers promise 200 bytes, 12 come, then the connection closes
HANG = "/payments/hang"  # the request is read, no answer comes until the test ends


class RawBank:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 written on sockets, so it can misbehave at will."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                fields = dict(x.lower().partition(":")[::2] for x in lines[1:])
                length = int(fields.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                if path == HANG:
                    self.release.wait(30)
                    return
                if path == CUT:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
                    conn.sendall(b'{"status":"AC')
                    return
                code, body = ANSWERS[path]
                head_out = f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                conn.sendall(head_out.encode() + body)

    def close(self) -> None:
        self.release.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def bank() -> Iterator[RawBank]:
    server = RawBank()
    try:
        yield server
    finally:
        server.close()


PROBE = """
import json, sys, types
from pathlib import Path
from locust.env import Environment
from harness.load import locustfile as lf

base, refused, history = sys.argv[1], sys.argv[2], Path(sys.argv[3])
env = Environment()
env.create_local_runner()
customer = lf.Customer(env)
customer.network_timeout = customer.connection_timeout = 0.5
customer.settings = types.SimpleNamespace(latency_slo_ms=2000.0)
lf.state.recorder = lf.HistoryRecorder(history)
body = {"payment_id": "p-1", "creditor_bank": "BNKB", "amount": 1500}
cases = json.loads(sys.argv[4])
for op, method, at, path, name in cases:
    data = b'{"payment_id":"p-1"}' if method == "POST" else None
    customer.exchange(op, method, refused if at == "refused" else base, path, name, body, "BNKA", data)
lf.state.recorder.close()
stats = {f"{e.method} {e.name}": [e.num_requests, e.num_failures] for e in env.stats.entries.values()}
print(json.dumps(stats))
"""

# (op, method, where, path, Locust name) -> (outcome, status, reason, http, error)
CASES = [
    (("payment", "POST", "bank", "/payments/ok", "ok"), ("ok", "ACSC", None, 200, None)),
    (("payment", "POST", "bank", "/payments/am04", "am04"), ("fail", "RJCT", "AM04", 422, None)),
    (("payment", "POST", "bank", "/payments/busy", "busy"), ("unknown", None, None, 503, "http-5xx")),
    (("payment", "POST", "bank", CUT, "cut"), ("unknown", None, None, 200, "connection")),
    (("payment", "POST", "bank", HANG, "hang"), ("unknown", None, None, None, "timeout")),
    (("payment", "POST", "refused", "/payments/ok", "refused"), ("unknown", None, None, None, "connection")),
    (("name_enquiry", "GET", "bank", "/parties/known", "known"), ("ok", None, None, 200, None)),
    (("name_enquiry", "GET", "bank", "/parties/unknown", "unknown"), ("fail", "RJCT", "AC01", 404, None)),
    (("payment", "POST", "bank", "/payments/ok", "ok again"), ("ok", "ACSC", None, 200, None)),  # after the cut
]


def test_every_kind_of_answer_reaches_the_history_and_locust_as_the_checker_judges_it(
    bank: RawBank, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    history = tmp_path / "history.jsonl"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, f"http://127.0.0.1:{bank.port}", refused, str(history),
         json.dumps([case for case, _ in CASES])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [json.loads(raw) for raw in history.read_text().splitlines()]
    assert len(lines) == len(CASES)
    for ((op, method, _where, _path, name), expected), line in zip(CASES, lines, strict=True):
        seen = (line["outcome"], line["status"], line["reason"], line["http"], line["error"])
        assert (line["op"], seen) == (op, expected), name
        assert line["sent"] is not None and line["invoke"] <= line["sent"] <= line["complete"]
        failed = not is_available(line, slo_ms=2000.0)
        assert stats[f"{method} {name}"] == [1, int(failed)], (name, line)
    assert sum(failures for _, failures in stats.values()) == 4  # busy, cut, hang, refused
