"""Small helpers shared by the tests: JSON over HTTP, waiting on a condition with a deadline, and a switch
with its banks started as a user would start their own system (target files and scenarios for it)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from harness.links import link_names
from harness.procs import free_port, signal_group
from mock_switch.config import account_number

T = TypeVar("T")


def call(
    method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 15,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:  # fmt: skip
    status, _, answer = exchange(method, url, body, raw, timeout, headers)
    return status, answer


def exchange(
    method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 15,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:  # fmt: skip
    """(status, response headers, JSON body); `headers` replace the default JSON Content-Type."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json"} if headers is None else headers
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def post(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    return call("POST", url, body, raw)


def get(url: str) -> tuple[int, Any]:
    return call("GET", url)


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def payment(pid: str, debtor: str = "0100000001", creditor_bank: str = "BNKB", creditor: str = "0200000003",
            amount: int = 1_500) -> dict[str, Any]:  # fmt: skip
    return {
        "payment_id": pid,
        "debtor_account": debtor,
        "creditor_bank": creditor_bank,
        "creditor_account": creditor,
        "amount": amount,
        "currency": "NGN",
    }


def target_scenario_file(
    tmp: Path, tfile: Path, faults: list[dict[str, Any]], *, name: str, description: str, rate: float, duration: float
) -> Path:
    """A scenario file that runs against the target file `tfile`: consistency judged, availability only shown
    (the machine is shared, so these tests measure availability and do not judge it)."""
    data = {
        "name": name,
        "description": description,
        "target": str(tfile),
        "load": {"rate": rate, "duration": duration},
        "faults": faults,
        "expect": {
            "availability": {"baseline_success_ratio": None, "steady_success_ratio": None},
            "consistency": {"verdict": "consistent", "max_time_to_consistency_s": None},
        },
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def loopback_addresses(codes: tuple[str, ...]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """For a switch and banks `codes`: each service's own address, and each link's listener -> upstream,
    on loopback ports free now."""
    direct = {name: f"127.0.0.1:{free_port()}" for name in ("switch", *codes)}
    links = {}
    for name in link_names(codes):
        links[name] = {"listen": f"127.0.0.1:{free_port()}", "upstream": direct[name.partition("->")[2]]}
    return direct, links


def target_file(
    tmp: Path, name: str, codes: tuple[str, ...], direct: dict[str, str], links: dict[str, Any], **extra: Any
) -> Path:
    """A target file for a switch and banks `codes` at `direct`, reached through `links`; numbered so that
    several can live in one folder."""
    data = {
        "contract": "1.0",
        "name": name,
        "currency": "KES",
        "switch": {"url": f"http://{direct['switch']}"},
        "participants": [
            {"code": c, "url": f"http://{direct[c]}", "account": account_number(i, 0)} for i, c in enumerate(codes)
        ],
        "links": links,
        "load": {"accounts": 100},
        **extra,
    }
    path = tmp / f"target-{len(list(tmp.glob('target-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def answers_health(url: str) -> bool:
    try:
        return call("GET", url + "/health", timeout=1.0)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def own_services(tmp: Path, config: dict[str, Any], codes: tuple[str, ...]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The bundled mock's switch and banks `codes` started by hand from `config` (written to
    tmp/system.json), in one process group of their own led by the switch (not the test's, not the
    harness's), as a user's own system would be; healthy before this yields; the group stopped after."""
    (tmp / "system.json").write_text(json.dumps(config))
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp / "services.log").open("wb")
    try:
        listen = {"switch": config["switch"]["listen"], **{b["code"]: b["listen"] for b in config["banks"]}}
        for name in ("switch", *codes):
            args = ["switch"] if name == "switch" else ["bank", name]
            command = [sys.executable, "-m", "mock_switch", *args, "--config", str(tmp / "system.json"),
                       "--data-dir", str(tmp / name)]  # fmt: skip
            group = 0 if not procs else procs[0].pid
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, process_group=group))
        for name in ("switch", *codes):
            url = f"http://{listen[name]}"
            eventually(lambda url=url: answers_health(url), timeout=60, what=f"{name} at {url}")
        yield procs
    finally:
        if procs:
            signal_group(procs[0].pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    signal_group(procs[0].pid, signal.SIGKILL)
                    p.wait(timeout=15)
        log.close()
