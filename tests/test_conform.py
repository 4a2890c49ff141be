"""`harness conform`: passes against the bundled mock started as a user would start their own system,
and fails, naming the endpoint and the fix, against targets that break the contract.

The mock runs outside the harness: its switch and three banks with non-default bank codes, in one
process group of their own, configured from a file like targets/mock.json. The non-conforming
targets are a tiny stub server in this test that answers wrong shapes or wrong codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import own_services

from harness import target as targets
from harness.conform import suite
from harness.procs import free_port
from mock_switch.config import SystemConfig, account_number

ROOT = Path(__file__).resolve().parent.parent
CODES = ("ACME", "BETA", "CRED")  # not the mock's default BNKA, BNKB ...


def target_for(system: SystemConfig, switch_url: str, bank_urls: dict[str, str], cap_amount: int) -> dict[str, Any]:
    """The target file a user would write for the mock: fixtures from its deterministic accounts."""
    participants = []
    for i, bank in enumerate(system.banks):
        participants.append(
            {
                "code": bank.code,
                "url": bank_urls[bank.code],
                "account": account_number(i, 0),
                "blocked_account": account_number(i, bank.blocked_every - 1),
                "unknown_account": account_number(i, bank.accounts + 7),
            }
        )
    return {
        "contract": "1.0",
        "name": "own mock",
        "currency": system.currency,
        "switch": {"url": switch_url},
        "participants": participants,
        "conform": {"amount": 150, "over_cap_amount": cap_amount, "timeout_s": 20},
    }


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Switch + 3 banks started like a user's own system (not by the harness); yields a target file."""
    tmp = tmp_path_factory.mktemp("own")
    ports = {name: free_port() for name in ("switch", *CODES)}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    cap = 300_000
    config = {
        "currency": "KES",
        "switch": {"listen": f"127.0.0.1:{ports['switch']}", "bank_urls": {c: urls[c] for c in CODES}},
        "banks": [
            {"code": c, "listen": f"127.0.0.1:{ports[c]}", "switch_url": urls["switch"], "accounts": 100,
             "opening_balance": 1_000_000, "net_debit_cap": cap, "blocked_every": 10}
            for c in CODES
        ],
    }  # fmt: skip
    with own_services(tmp, config, CODES):
        system = SystemConfig.load(tmp / "system.json")
        tfile = tmp / "own.yaml"
        tfile.write_text(yaml.safe_dump(target_for(system, urls["switch"], {c: urls[c] for c in CODES}, cap + 1)))
        yield tfile


def conform(tfile: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "conform", str(tfile)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip


def test_own_mock_conforms(own_system: Path) -> None:
    done = conform(own_system)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert " 0 failed" in out
    for row in (
        "payment ACME->BETA succeeds", "payment CRED->ACME succeeds", "replay answers the same",
        "reused id with another body: DUPL", "malformed request: FF01", "insufficient funds: AM04",
        "blocked debtor account: AC06", "unknown creditor account: AC01", "over the net debit cap: AM23",
        "status query, committed payment", "status query, rejected payment", "status query, never-seen payment: AG09",
        "name enquiry ACME -> BETA", "name enquiry, unknown account: AC01", "read /settlement/windows: row shape",
        "entries of the replayed payment", "committed transfer in a window",
    ):  # fmt: skip
        lines = [line for line in out.splitlines() if row in line]
        assert lines and all(line.startswith("PASS") for line in lines), f"{row!r} not passed:\n{out}"
    for reason in ("AB05", "AB06", "AB08"):  # cannot happen without a fault: said so, not hidden
        assert any(line.startswith("SKIP") and reason in line for line in out.splitlines()), out


def test_a_second_run_against_the_same_books_conforms(own_system: Path) -> None:
    """Fresh payment ids every run: conform can be re-run on a system that has seen one already."""
    done = conform(own_system)
    assert done.returncode == 0, done.stdout + done.stderr


# -- non-conforming targets -------------------------------------------------------------------------


class Stub(BaseHTTPRequestHandler):
    """Answers like a switch and bank that misread the contract. `mode` picks the mistake."""

    mode = "shapes"
    seen: set[str]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, http: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(http)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/payments":
            return self._send(404, {})
        if self.mode == "shapes":
            return self._send(200, {"result": "ok"})  # no payment_id, no status
        if self.mode == "replay":  # every payment succeeds once; any reuse of an id is called a duplicate
            pid = body.get("payment_id", "")
            if pid in self.seen:
                return self._send(409, {"payment_id": pid, "status": "RJCT", "reason": "DUPL"})
            self.seen.add(pid)
            return self._send(200, {"payment_id": pid, "status": "ACSC"})
        # "codes": the right shape, but every payment is refused AM04 under a 400
        return self._send(400, {"payment_id": body.get("payment_id", ""), "status": "RJCT", "reason": "AM04"})

    def do_GET(self) -> None:
        path = self.path
        if path == "/health":
            return self._send(200, {})
        if path.startswith("/payments/"):
            return self._send(200, {"payment_id": path.split("/")[-1], "status": "DONE"})
        if path.startswith("/parties/"):
            return self._send(200, {"name": "someone"})
        if path == "/transfers":
            return self._send(200, [{"payment_id": "x", "status": "ACSC"}])
        if path == "/credits":
            return self._send(200, {"credits": []})  # an object, not an array
        return self._send(404, {})  # /payments (required!), /accounts, /participants, /settlement/...


@pytest.fixture
def stub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    handler = type("ModeStub", (Stub,), {"mode": request.param, "seen": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    tfile = tmp_path / "stub.yaml"
    tfile.write_text(
        yaml.safe_dump(
            {
                "name": "stub",
                "currency": "NGN",
                "switch": {"url": url},
                "participants": [
                    {"code": "ONEB", "url": url, "account": "1", "unknown_account": "404"},
                    {"code": "TWOB", "url": url, "account": "2"},
                ],
                "conform": {"timeout_s": 5},
            }
        )
    )
    try:
        yield tfile
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _row(checks: list[suite.Check], name: str, endpoint: str | None = None) -> suite.Check:
    found = [c for c in checks if c.name == name and (endpoint is None or c.endpoint == endpoint)]
    assert found, f"no check {name!r} at {endpoint}: {[(c.name, c.endpoint) for c in checks]}"
    return found[0]


@pytest.mark.parametrize("stub", ["shapes"], indirect=True)
def test_wrong_shapes_fail_naming_endpoint_and_fix(stub: Path) -> None:
    checks = suite.run(targets.load(stub))
    pay = _row(checks, "payment ONEB->TWOB succeeds")
    assert pay.verdict == "FAIL" and pay.endpoint == "POST ONEB /payments"
    assert "not a payment answer (payment_id: Field required)" in pay.detail
    assert "answer HTTP 200" in pay.fix and '"status": "ACSC"' in pay.fix
    never = _row(checks, "status query, never-seen payment: AG09")
    assert never.verdict == "FAIL" and "status" in never.detail and '"reason": "AG09"' in never.fix
    party = _row(checks, "name enquiry ONEB -> TWOB")
    assert party.verdict == "FAIL" and "wrong shape: bank: Field required" in party.detail
    payments = _row(checks, "read /payments: row shape", "GET ONEB /payments")
    assert payments.verdict == "FAIL" and "HTTP 404" in payments.detail  # required: 404 is not "not offered"
    assert "JSON array of PaymentRow" in payments.fix and "docs/contract/bank.openapi.json" in payments.fix
    credits = _row(checks, "read /credits: row shape", "GET ONEB /credits")
    assert credits.verdict == "FAIL" and "JSON array of CreditRow" in credits.fix
    transfers = _row(checks, "read /transfers: row shape")
    assert transfers.verdict == "FAIL" and "row 0 x: fingerprint: Field required" in transfers.detail
    # Optional capabilities the stub does not offer are skipped, with what that costs, not failed.
    windows = _row(checks, "read /settlement/windows: row shape")
    assert windows.verdict == "SKIP" and "settlement checks do not apply" in windows.detail
    table = suite.table(checks, targets.load(stub))
    assert "optional capability 'settlement' not offered" in table


@pytest.mark.parametrize("stub", ["codes"], indirect=True)
def test_wrong_codes_fail_and_the_command_exits_non_zero(stub: Path) -> None:
    done = conform(stub)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    pay = next(i for i, line in enumerate(lines) if "payment ONEB->TWOB succeeds" in line)
    assert lines[pay].startswith("FAIL") and "answered RJCT AM04, expected ACSC" in lines[pay]
    assert "fix: answer HTTP 200" in lines[pay + 1]
    am04 = next(line for line in lines if "insufficient funds: AM04" in line)
    assert am04.startswith("FAIL") and "under HTTP 400, expected HTTP 422" in am04
    assert "failed" in lines[-1] or any(" failed, " in line for line in lines)


def test_unreachable_target_says_which_service_and_how_to_fix(tmp_path: Path) -> None:
    port = free_port()  # nobody listens here
    tfile = tmp_path / "t.yaml"
    tfile.write_text(
        yaml.safe_dump(
            {
                "name": "down",
                "currency": "NGN",
                "switch": {"url": f"http://127.0.0.1:{port}"},
                "participants": [
                    {"code": "AAAA", "url": f"http://127.0.0.1:{port}", "account": "1"},
                    {"code": "BBBB", "url": f"http://127.0.0.1:{port}", "account": "2"},
                ],
                "conform": {"timeout_s": 2},
            }
        )
    )
    checks = suite.run(targets.load(tfile))
    reach = _row(checks, "reachable", "GET switch /health")
    assert reach.verdict == "FAIL" and "ConnectionRefusedError" in reach.detail
    assert f"correct its url in the target file (http://127.0.0.1:{port})" in reach.fix


def test_the_contract_fields_are_enough_for_reconciliation(own_system: Path) -> None:
    """Reconcile the own system's books twice: as the mock serves them, and cut down to the fields the
    contract's row models declare (all a conforming target must give). Same verdicts: the contract
    asks for everything the checkers read."""
    from harness.checkers.reconcile import reconcile
    from harness.contract import (
        AccountRow,
        CreditRow,
        EntryRow,
        MovementRow,
        ParticipantRow,
        PaymentRow,
        TransferRow,
        WindowRow,
    )  # fmt: skip
    from harness.observe.snapshot import take_stable

    t = targets.load(own_system)
    assert conform(own_system).returncode == 0  # some committed and rejected payments in the books
    full = take_stable(t.switch.url, {p.code: p.url for p in t.participants})

    def cut(rows: list[dict[str, Any]], model: type[Any]) -> list[dict[str, Any]]:
        return [{k: row[k] for k in model.model_fields if k in row} for row in rows]

    sw = full["switch"]
    lean = {
        "switch": {
            "transfers": cut(sw["transfers"], TransferRow), "participants": cut(sw["participants"], ParticipantRow),
            "windows": cut(sw["windows"], WindowRow), "movements": cut(sw["movements"], MovementRow),
        },
        "banks": {
            code: {
                "payments": cut(b["payments"], PaymentRow), "credits": cut(b["credits"], CreditRow),
                "accounts": cut(b["accounts"], AccountRow), "entries": cut(b["entries"], EntryRow),
            }
            for code, b in full["banks"].items()
        },
    }  # fmt: skip
    assert lean != {"switch": sw, "banks": full["banks"]}  # the cut removed something (e.g. msisdn)
    opening = 3 * 100 * 1_000_000
    a, b = reconcile(full, opening, None), reconcile(lean, opening, None)
    assert a.summary() == b.summary()
    assert a.ok and a.clean_settled >= 6 and a.clean_failed >= 4, a.summary()


@pytest.mark.parametrize("stub", ["replay"], indirect=True)
def test_a_replay_taken_for_a_duplicate_fails(stub: Path) -> None:
    """A target that refuses an identical resend (instead of answering it again) breaks idempotency:
    a customer who lost the answer and retries would be told DUPL for a payment that went through."""
    checks = suite.run(targets.load(stub))
    assert _row(checks, "payment ONEB->TWOB succeeds").verdict == "PASS"
    replay = _row(checks, "replay answers the same")
    assert replay.verdict == "FAIL" and "answered RJCT DUPL, expected ACSC" in replay.detail
    assert "same request sent again (idempotent by payment_id" in replay.fix
    assert _row(checks, "reused id with another body: DUPL").verdict == "PASS"
    # It also accepts what it should refuse: every rejection check fails, naming the code wanted.
    am04 = _row(checks, "insufficient funds: AM04")
    assert am04.verdict == "FAIL" and "answered ACSC, expected RJCT AM04" in am04.detail
