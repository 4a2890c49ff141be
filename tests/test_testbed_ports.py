"""A link's listen port is chosen free but bound later by Toxiproxy: a port taken in between must not
fail the run (CI once lost a run to "address already in use")."""

from __future__ import annotations

import collections
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
from support import get

from harness import procs
from harness.testbed import Testbed
from harness.testbed.system import build_system

pytestmark = pytest.mark.slow


def test_a_link_port_taken_before_start_is_chosen_again(tmp_path: Path) -> None:
    bed = Testbed(build_system(banks=2, accounts=20), tmp_path)
    link = bed.links["BNKA->switch"]
    host, port = link.listen.rsplit(":", 1)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((host, int(port)))  # another process takes the port between choice and bind
    squatter.listen(1)
    try:
        with bed:
            moved = bed.links["BNKA->switch"]
            assert moved.listen != link.listen
            # The bank dials the switch through the new listener, and the nemesis breaks that one.
            assert bed.system.banks[0].switch_url == f"http://{moved.listen}"
            assert bed.nemesis.links["BNKA->switch"] is moved
            assert get(f"http://{moved.listen}/health")[0] == 200
            assert bed.toxiproxy.proxies()[moved.proxy]["listen"] == moved.listen
    finally:
        squatter.close()


def test_a_service_port_taken_before_start_is_chosen_again(tmp_path: Path) -> None:
    system = build_system(banks=2, accounts=20)
    host, port = system.switch.listen.rsplit(":", 1)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((host, int(port)))  # taken between build_system's choice and the switch's bind
    squatter.listen(1)
    try:
        with Testbed(system, tmp_path) as bed:
            assert bed.system.switch.listen != system.switch.listen
            # Every link to the switch follows it, and payments' first hop answers through them.
            assert bed.links["BNKA->switch"].upstream == bed.system.switch.listen
            assert get(f"http://{bed.links['BNKA->switch'].listen}/health")[0] == 200
            assert get(bed.topology.switch.url + "/health")[0] == 200
    finally:
        squatter.close()


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers every health check with 200, as a Toxiproxy listener forwarding to another service would."""

    def do_GET(self) -> None:
        body = json.dumps({"service": "BNKB", "status": "up", "pid": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_health_answer_from_another_listener_on_the_port_is_not_the_service(tmp_path: Path) -> None:
    """Once a switch and a proxy were given one port: the proxy answered the switch's health check
    for it. Only the service's own process (its pid in the answer) counts as healthy."""
    system = build_system(banks=2, accounts=20)
    host, port = system.switch.listen.rsplit(":", 1)
    impostor = http.server.ThreadingHTTPServer((host, int(port)), _Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        with Testbed(system, tmp_path) as bed:
            assert bed.system.switch.listen != system.switch.listen, "the switch moved off the impostor's port"
            status, body = get(bed.topology.switch.url + "/health")
            assert status == 200 and body["pid"] == bed.topology.switch.pid
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    offered = iter([41001, 41001, 41002, 41001, 41003])  # the kernel may offer a port again at once

    class Probe:
        def __init__(self, *args: object) -> None:
            self.port = next(offered)

        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def bind(self, address: object) -> None:
            pass

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(procs, "_HANDED_OUT", collections.deque(maxlen=16))
    monkeypatch.setattr(procs.socket, "socket", Probe)
    assert [procs.free_port() for _ in range(3)] == [41001, 41002, 41003]


def test_toxiproxy_runs_go_on_one_thread_unless_told_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GOMAXPROCS=1 roughly halves Toxiproxy's CPU per payment (harness/testbed/proxies.py); a
    GOMAXPROCS the user set is passed on instead."""
    from harness.testbed.proxies import ToxiproxyServer

    def started_with(value: str | None) -> str:
        if value is None:
            monkeypatch.delenv("GOMAXPROCS", raising=False)
        else:
            monkeypatch.setenv("GOMAXPROCS", value)
        server = ToxiproxyServer(tmp_path / f"toxiproxy-{value}.log")
        server.start()
        try:
            assert server.proc is not None
            environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
            return next(x.decode() for x in environ if x.startswith(b"GOMAXPROCS="))
        finally:
            server.stop()

    assert started_with(None) == "GOMAXPROCS=1"
    assert started_with("2") == "GOMAXPROCS=2"
