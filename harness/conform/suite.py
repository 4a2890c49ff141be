"""The conformance checks, one function per capability of harness/contract.py, and their table.

Every request goes to an address of the target file, over loopback or the user's test network; the
run is bounded: a fixed number of requests, each with the target's timeout, and a pending answer is
asked about at most until that timeout. Payment ids start with `conform-<run tag>-`, so a run never
collides with another one or with the load's ids.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError

from harness.contract import CAPABILITIES, FAULT_ONLY_REASONS, Capability, PartyAnswer, Read, capability
from harness.target import Participant, Target
from mock_switch.api import Answer
from mock_switch.codes import Reason, Status, http_status

Verdict = Literal["PASS", "FAIL", "SKIP"]
CONTRACT_DOC = "docs/contract.md"
NOT_OFFERED = (404, 405, 501)  # an optional endpoint a target does not have


@dataclass(frozen=True)
class Check:
    name: str
    capability: str
    endpoint: str  # METHOD BANK /path, as sent
    verdict: Verdict
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Reply:
    http: int | None  # None: no HTTP answer at all
    body: Any  # the parsed JSON, or None
    text: str  # the raw answer (or the error), shortened, for messages

    def shown(self) -> str:
        if self.http is None:
            return f"no answer ({self.text})"
        return f"HTTP {self.http} {self.text}"


def call(method: str, url: str, body: dict[str, Any] | None, timeout_s: float) -> Reply:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            http, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        http, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:  # refused, unknown host ...: the cause, not the wrapper
        cause = exc.reason if isinstance(exc.reason, BaseException) else exc
        return Reply(None, None, f"{type(cause).__name__}: {cause}"[:200])
    except (OSError, ValueError) as exc:  # reset, timeout, bad address
        return Reply(None, None, f"{type(exc).__name__}: {exc}"[:200])
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return Reply(http, parsed, text[:200] + ("..." if len(text) > 200 else ""))


def _answer_text(status: Status, reason: Reason | None, payment_id: str) -> str:
    body = {"payment_id": payment_id, "status": status.value} | ({"reason": reason.value} if reason else {})
    return f"HTTP {http_status(status, reason)} {json.dumps(body)}"


@dataclass
class Run:
    target: Target
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    checks: list[Check] = field(default_factory=list)
    seq: int = 0
    committed: dict[str, dict[str, Any]] = field(default_factory=dict)  # payment id -> request body
    rejected: dict[str, tuple[dict[str, Any], Reason]] = field(default_factory=dict)
    payer_of: dict[str, str] = field(default_factory=dict)

    @property
    def timeout_s(self) -> float:
        return self.target.conform.timeout_s

    def new_id(self, what: str) -> str:
        self.seq += 1
        return f"conform-{self.tag}-{self.seq:03d}-{what}"

    def add(self, name: str, cap: str, endpoint: str, verdict: Verdict, detail: str, fix: str = "") -> bool:
        self.checks.append(Check(name, cap, endpoint, verdict, detail, fix))
        return verdict == "PASS"

    def pairs(self) -> list[tuple[Participant, Participant]]:
        """Each bank pays the next one (round the ring): every bank is payer and payee once."""
        ps = self.target.participants
        return [(ps[i], ps[(i + 1) % len(ps)]) for i in range(len(ps))]

    def payment(self, payer: Participant, payee: Participant, what: str, **changes: Any) -> dict[str, Any]:
        body = {
            "payment_id": self.new_id(what),
            "debtor_account": payer.account,
            "creditor_bank": payee.code,
            "creditor_account": payee.account,
            "amount": self.target.conform.amount,
            "currency": self.target.currency,
        }
        return body | changes

    # -- one payment and its final answer -------------------------------------------------------

    def pay(self, payer: Participant, body: dict[str, Any]) -> tuple[Reply, Answer | None, str]:
        """POST /payments; when the answer is PDNG, ask with the status query until a final one (or
        the timeout). Returns the last reply, its answer (None: not an answer), and a problem."""
        reply = call("POST", payer.url + "/payments", body, self.timeout_s)
        answer, problem = parse_answer(reply, body["payment_id"])
        deadline = time.monotonic() + self.timeout_s
        while answer is not None and answer.status is Status.PDNG and time.monotonic() < deadline:
            time.sleep(0.2)
            reply = call("GET", f"{payer.url}/payments/{body['payment_id']}", None, self.timeout_s)
            answer, problem = parse_answer(reply, body["payment_id"])
        return reply, answer, problem


def parse_answer(reply: Reply, payment_id: str) -> tuple[Answer | None, str]:
    """The reply as a payment answer, or None and why it is not one."""
    if reply.http is None:
        return None, reply.shown()
    try:
        answer = Answer.model_validate(reply.body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        return None, f"not a payment answer ({where}: {err['msg']}): {reply.shown()}"
    if answer.payment_id and answer.payment_id != payment_id:
        return None, f"answers about payment {answer.payment_id!r}, asked about {payment_id!r}: {reply.shown()}"
    return answer, ""


def expect_answer(
    run: Run, name: str, cap: str, endpoint: str, reply: Reply, answer: Answer | None, problem: str,
    payment_id: str, status: Status, reason: Reason | None, why: str,
) -> bool:  # fmt: skip
    """One check that a payment answer is `status`/`reason` under the HTTP status the codes map it to."""
    fix = f"answer {_answer_text(status, reason, payment_id)} {why} (see {CONTRACT_DOC}, 'Answers and codes')"
    if answer is None:
        return run.add(name, cap, endpoint, "FAIL", problem, fix)
    got = f"{answer.status.value}" + (f" {answer.reason.value}" if answer.reason else "")
    want = f"{status.value}" + (f" {reason.value}" if reason else "")
    if answer.status is not status or (reason is not None and answer.reason is not reason):
        return run.add(name, cap, endpoint, "FAIL", f"answered {got}, expected {want}: {reply.shown()}", fix)
    if reply.http != http_status(status, reason):
        wanted = http_status(status, reason)
        return run.add(
            name, cap, endpoint, "FAIL", f"answered {got} under HTTP {reply.http}, expected HTTP {wanted}", fix
        )
    return run.add(name, cap, endpoint, "PASS", f"{want} (HTTP {reply.http})")


# -- the checks -------------------------------------------------------------------------------------


def reachable(run: Run) -> None:
    services = [("switch", run.target.switch.url)] + [(p.code, p.url) for p in run.target.participants]
    health = capability("health")
    for who, url in services:
        reply = call("GET", url + "/health", None, run.timeout_s)
        endpoint = f"GET {who} /health"
        if reply.http is None:
            run.add(
                "reachable", "health", endpoint, "FAIL", reply.shown(),
                f"start {who} or correct its url in the target file ({url})",
            )  # fmt: skip
        elif reply.http == 200:
            run.add("liveness probe", "health", endpoint, "PASS", "HTTP 200")
        elif reply.http in NOT_OFFERED:
            run.add("liveness probe", "health", endpoint, "SKIP", f"not offered (HTTP {reply.http}): {health.without}")
        else:
            run.add("liveness probe", "health", endpoint, "FAIL", reply.shown(), "answer HTTP 200 when up (optional)")


def payments(run: Run) -> None:
    cap = "payments"
    conform = run.target.conform
    for payer, payee in run.pairs():
        body = run.payment(payer, payee, "ok")
        reply, answer, problem = run.pay(payer, body)
        endpoint = f"POST {payer.code} /payments"
        ok = expect_answer(
            run, f"payment {payer.code}->{payee.code} succeeds", cap, endpoint, reply, answer, problem,
            body["payment_id"], Status.ACSC, None,
            f"for a payment of {conform.amount} from a funded account ({payer.account}) to an existing one"
            f" ({payee.code} {payee.account}); check the accounts in the target file exist and hold funds",
        )  # fmt: skip
        if ok:
            run.committed[body["payment_id"]] = body
            run.payer_of[body["payment_id"]] = payer.code
    payer, payee = run.pairs()[0]
    endpoint = f"POST {payer.code} /payments"
    first = next(iter(run.committed.values()), None)
    if first is None:
        run.add("replay answers the same", cap, endpoint, "SKIP", "no payment succeeded to replay")
        run.add("reused id with another body: DUPL", cap, endpoint, "SKIP", "no payment succeeded to reuse")
    else:
        payer = run.target.bank(run.payer_of[first["payment_id"]])
        endpoint = f"POST {payer.code} /payments"
        reply = call("POST", payer.url + "/payments", first, run.timeout_s)
        answer, problem = parse_answer(reply, first["payment_id"])
        expect_answer(
            run, "replay answers the same", cap, endpoint, reply, answer, problem, first["payment_id"],
            Status.ACSC, None, "to the same request sent again (idempotent by payment_id: no second debit)",
        )  # fmt: skip
        other = first | {"amount": first["amount"] + 1}
        reply = call("POST", payer.url + "/payments", other, run.timeout_s)
        answer, problem = parse_answer(reply, first["payment_id"])
        expect_answer(
            run, "reused id with another body: DUPL", cap, endpoint, reply, answer, problem,
            first["payment_id"], Status.RJCT, Reason.DUPL,
            "to a payment id already used with a different body (nothing is moved)",
        )  # fmt: skip
    rejections(run, payer, payee)
    status_queries(run)


def rejections(run: Run, payer: Participant, payee: Participant) -> None:
    """One request per reason code a request can provoke; the technical ones need a fault."""
    cap = "payments"
    endpoint = f"POST {payer.code} /payments"
    bad = run.payment(payer, payee, "ff01", amount=-1)
    reply = call("POST", payer.url + "/payments", bad, run.timeout_s)
    answer, problem = parse_answer(reply, bad["payment_id"])
    expect_answer(
        run, "malformed request: FF01", cap, endpoint, reply, answer, problem, "", Status.RJCT, Reason.FF01,
        "to a request that breaks the schema (here amount -1), with a message naming the field",
    )  # fmt: skip
    cases: list[tuple[Reason, str, dict[str, Any] | None, str, str]] = [
        (Reason.AM04, "insufficient funds", {"amount": 10**12}, "to a payment larger than the payer's balance"
         " (here 10^12, the largest amount the contract allows)", ""),
        (Reason.AC06, "blocked debtor account", {"debtor_account": payer.blocked_account}
         if payer.blocked_account else None, "to a payment from a blocked account",
         f"name a blocked account as participants[{payer.code}].blocked_account"),
        (Reason.AC01, "unknown creditor account", {"creditor_account": payee.unknown_account}
         if payee.unknown_account else None, "to a payment to an account the payee bank does not have",
         f"name an account {payee.code} does not have as participants[{payee.code}].unknown_account"),
        (Reason.AM23, "over the net debit cap", {"amount": run.target.conform.over_cap_amount}
         if run.target.conform.over_cap_amount else None, "to a payment the payer can afford that would take"
         " its bank over its net debit cap", "set conform.over_cap_amount to such an amount"),
    ]  # fmt: skip
    for reason, what, changes, why, missing in cases:
        name = f"{what}: {reason.value}"
        if changes is None:
            run.add(name, cap, endpoint, "SKIP", f"the target file names no fixture for it; {missing}")
            continue
        body = run.payment(payer, payee, reason.value.lower(), **changes)
        reply, answer, problem = run.pay(payer, body)
        pid = body["payment_id"]
        if expect_answer(run, name, cap, endpoint, reply, answer, problem, pid, Status.RJCT, reason, why):
            run.rejected[body["payment_id"]] = (body, reason)
            run.payer_of[body["payment_id"]] = payer.code
    for reason in sorted(FAULT_ONLY_REASONS):
        run.add(
            f"technical reject: {reason.value}", cap, "POST * /payments", "SKIP",
            "needs a fault (a timeout or an offline bank): chaos scenarios exercise it, a run without faults cannot",
        )  # fmt: skip


def status_queries(run: Run) -> None:
    cap = "payments"
    asked: list[tuple[str, dict[str, Any], Status, Reason | None, str]]
    asked = [(pid, body, Status.ACSC, None, "committed") for pid, body in list(run.committed.items())[:1]]
    asked += [(pid, body, Status.RJCT, reason, "rejected") for pid, (body, reason) in list(run.rejected.items())[:1]]
    for pid, _body, status, reason, what in asked:
        payer = run.target.bank(run.payer_of[pid])
        reply = call("GET", f"{payer.url}/payments/{pid}", None, run.timeout_s)
        answer, problem = parse_answer(reply, pid)
        expect_answer(
            run, f"status query, {what} payment", cap, f"GET {payer.code} /payments/{{id}}", reply, answer, problem,
            pid, status, reason, f"to a status query about a {what} payment (its final answer, again)",
        )  # fmt: skip
    payer = run.target.participants[0]
    pid = run.new_id("never-sent")
    reply = call("GET", f"{payer.url}/payments/{pid}", None, run.timeout_s)
    answer, problem = parse_answer(reply, pid)
    expect_answer(
        run, "status query, never-seen payment: AG09", cap, f"GET {payer.code} /payments/{{id}}", reply, answer,
        problem, pid, Status.RJCT, Reason.AG09, "to a status query about a payment id it never received",
    )  # fmt: skip


def name_enquiry(run: Run) -> None:
    cap = "name_enquiry"
    for payer, payee in run.pairs():
        endpoint = f"GET {payer.code} /parties/{{id}}"
        reply = call("GET", f"{payer.url}/parties/{quote(payee.account, safe='')}", None, run.timeout_s)
        name = f"name enquiry {payer.code} -> {payee.code}"
        fix = (
            f"answer HTTP 200 with {{'bank': '{payee.code}', 'account': '{payee.account}', 'name': ...}} for an"
            f" account of {payee.code} (see {CONTRACT_DOC}, 'Name enquiry')"
        )
        if reply.http != 200:
            run.add(name, cap, endpoint, "FAIL", reply.shown(), fix)
            continue
        try:
            party = PartyAnswer.model_validate(reply.body)
        except ValidationError as exc:
            run.add(name, cap, endpoint, "FAIL", f"wrong shape: {_first_error(exc)}: {reply.shown()}", fix)
            continue
        if (party.bank, party.account) != (payee.code, payee.account):
            run.add(name, cap, endpoint, "FAIL", f"names {party.bank} {party.account}", fix)
            continue
        run.add(name, cap, endpoint, "PASS", f"{party.bank} {party.account}: {party.name}")
    payer, payee = run.pairs()[0]
    endpoint = f"GET {payer.code} /parties/{{id}}"
    name = "name enquiry, unknown account: AC01"
    if payee.unknown_account is None:
        run.add(name, cap, endpoint, "SKIP", f"no participants[{payee.code}].unknown_account in the target file")
        return
    reply = call("GET", f"{payer.url}/parties/{quote(payee.unknown_account, safe='')}", None, run.timeout_s)
    answer, problem = parse_answer(reply, "")
    fix = f"answer HTTP 404 {{'status': 'RJCT', 'reason': 'AC01'}} for an unknown account (see {CONTRACT_DOC})"
    if answer is None:
        run.add(name, cap, endpoint, "FAIL", problem, fix)
    elif reply.http != 404 or answer.status is not Status.RJCT or answer.reason is not Reason.AC01:
        run.add(name, cap, endpoint, "FAIL", reply.shown(), fix)
    else:
        run.add(name, cap, endpoint, "PASS", "RJCT AC01 (HTTP 404)")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"


def read_rows(run: Run, cap: Capability, read: Read, who: str, url: str) -> list[dict[str, Any]] | None:
    """One read endpoint: every row validated against the contract's row model. None: not usable."""
    op = read.op
    endpoint = f"{op.method} {who} {op.path}"
    name = f"read {op.path}: row shape"
    reply = call(op.method, url + op.path, None, run.timeout_s)
    row_doc = f"{read.row.__name__} in docs/contract/{cap.side}.openapi.json"
    if reply.http in NOT_OFFERED and not cap.required:
        run.add(name, cap.name, endpoint, "SKIP", f"not offered (HTTP {reply.http}): {cap.without}")
        return None
    if reply.http != 200 or not isinstance(reply.body, list):
        fix = f"answer HTTP 200 with a JSON array of {row_doc}"
        if not cap.required:
            fix += " (optional: or 404 if the capability is not offered)"
        run.add(name, cap.name, endpoint, "FAIL", reply.shown(), fix)
        return None
    for i, row in enumerate(reply.body):
        try:
            read.row.model_validate(row)
        except ValidationError as exc:
            pid = row.get("payment_id", "") if isinstance(row, dict) else ""
            run.add(
                name, cap.name, endpoint, "FAIL", f"row {i} {pid}: {_first_error(exc)}",
                f"give every row the fields of {row_doc}",
            )  # fmt: skip
            return None
    run.add(name, cap.name, endpoint, "PASS", f"{len(reply.body)} row" + ("" if len(reply.body) == 1 else "s"))
    return reply.body


def _by_id(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["payment_id"], []).append(row)
    return out


def contains(
    run: Run, cap: str, endpoint: str, what: str, rows: list[dict[str, Any]] | None, pid: str,
    expect: dict[str, Any], fix: str,
) -> None:  # fmt: skip
    """The row of `pid` is there, once, with the `expect`ed fields."""
    if rows is None:
        return
    name = f"{what} listed"
    found = _by_id(rows).get(pid, [])
    if len(found) != 1:
        run.add(name, cap, endpoint, "FAIL", f"{len(found)} rows for payment {pid}, expected 1", fix)
        return
    wrong = {k: found[0].get(k) for k, v in expect.items() if found[0].get(k) != v}
    if wrong:
        run.add(name, cap, endpoint, "FAIL", f"payment {pid}: {wrong}, expected {expect}", fix)
        return
    run.add(name, cap, endpoint, "PASS", f"payment {pid}: " + ", ".join(f"{k}={v}" for k, v in expect.items()))


def reads(run: Run) -> None:
    by_name = {c.name: c for c in CAPABILITIES}
    committed = next(iter(run.committed.items()), None)
    rejected = next(iter(run.rejected.items()), None)
    for p in run.target.participants:
        cap = by_name["bank_reads"]
        pay_rows = read_rows(run, cap, cap.reads[0], p.code, p.url)
        credit_rows = read_rows(run, cap, cap.reads[1], p.code, p.url)
        if committed is not None:
            pid, body = committed
            if run.payer_of[pid] == p.code:
                contains(
                    run, cap.name, f"GET {p.code} /payments", "committed payment", pay_rows, pid,
                    {"status": "ACSC", "amount": body["amount"], "creditor_bank": body["creditor_bank"]},
                    "list every payment a customer made, once, with its final state (ACSC once committed)",
                )  # fmt: skip
            if body["creditor_bank"] == p.code:
                contains(
                    run, cap.name, f"GET {p.code} /credits", "credit of the committed payment", credit_rows, pid,
                    {"status": "ACCP", "amount": body["amount"]},
                    "list every credit received from the switch, once, ACCP once the beneficiary is credited",
                )  # fmt: skip
        if rejected is not None and run.payer_of[rejected[0]] == p.code:
            pid, (body, reason) = rejected
            contains(
                run, cap.name, f"GET {p.code} /payments", "rejected payment", pay_rows, pid,
                {"status": "RJCT", "reason": reason.value},
                "list rejected payments too, with status RJCT and the reason answered to the customer",
            )  # fmt: skip
        books = by_name["bank_books"]
        read_rows(run, books, books.reads[0], p.code, p.url)
        entries = read_rows(run, books, books.reads[1], p.code, p.url)
        if entries is not None and committed is not None:
            pid, body = committed
            kinds = sorted(e["kind"] for e in entries if e["payment_id"] == pid)
            want = (["DEBIT"] if run.payer_of[pid] == p.code else []) + (
                ["CREDIT"] if body["creditor_bank"] == p.code else []
            )
            if run.payer_of[pid] == p.code or body["creditor_bank"] == p.code:
                endpoint = f"GET {p.code} /entries"
                if kinds == sorted(want):
                    run.add("entries of the replayed payment", books.name, endpoint, "PASS", f"{pid}: {kinds}")
                else:
                    run.add(
                        "entries of the replayed payment", books.name, endpoint, "FAIL",
                        f"{pid}: entries {kinds}, expected {sorted(want)}",
                        "post one DEBIT at the payer and one CREDIT at the payee per payment, however often it is sent",
                    )  # fmt: skip
    sw = run.target.switch.url
    cap = by_name["switch_reads"]
    transfers = read_rows(run, cap, cap.reads[0], "switch", sw)
    if committed is not None:
        pid, body = committed
        contains(
            run, cap.name, "GET switch /transfers", "committed transfer", transfers, pid,
            {"status": "ACSC", "amount": body["amount"], "creditor_bank": body["creditor_bank"],
             "debtor_bank": run.payer_of[pid]},
            "list every transfer the switch received, once, ACSC once committed",
        )  # fmt: skip
    cap = by_name["positions"]
    parts = read_rows(run, cap, cap.reads[0], "switch", sw)
    if parts is not None:
        missing = sorted({p.code for p in run.target.participants} - {row["bank"] for row in parts})
        endpoint = "GET switch /participants"
        if missing:
            run.add("every participant listed", cap.name, endpoint, "FAIL", f"missing {missing}", "list every bank")
        else:
            run.add("every participant listed", cap.name, endpoint, "PASS", f"{len(parts)} participants")
    cap = by_name["settlement"]
    windows = read_rows(run, cap, cap.reads[0], "switch", sw)
    read_rows(run, cap, cap.reads[1], "switch", sw)
    if windows is not None and transfers is not None and committed is not None:
        row = _by_id(transfers).get(committed[0], [{}])[0]
        ids = {w["window_id"] for w in windows}
        endpoint = "GET switch /settlement/windows"
        if row.get("window_id") in ids:
            run.add("committed transfer in a window", cap.name, endpoint, "PASS", f"window {row['window_id']}")
        else:
            run.add(
                "committed transfer in a window", cap.name, endpoint, "FAIL",
                f"transfer {committed[0]} has window_id {row.get('window_id')}; windows are {sorted(ids)}",
                "give every committed transfer the window_id of a listed settlement window",
            )  # fmt: skip


SECTIONS: tuple[Callable[[Run], None], ...] = (reachable, payments, name_enquiry, reads)


def run(target: Target) -> list[Check]:
    r = Run(target)
    for section in SECTIONS:
        section(r)
        if section is reachable and any(c.name == "reachable" for c in failed(r.checks)):
            break  # every other check needs every service: their failures would only repeat this one
    return r.checks


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.verdict == "FAIL"]


def table(checks: list[Check], target: Target) -> str:
    width = max((len(c.name) for c in checks), default=10)
    ep = max((len(c.endpoint) for c in checks), default=10)
    lines = [f"conformance of {target.name!r} to the participant contract {target.contract} ({CONTRACT_DOC})", ""]
    lines.append(f"{'':4}  {'check':<{width}}  {'endpoint':<{ep}}  detail")
    for c in checks:
        lines.append(f"{c.verdict:4}  {c.name:<{width}}  {c.endpoint:<{ep}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':4}  {'':<{width}}  {'':<{ep}}  fix: {c.fix}")
    counts = {v: sum(c.verdict == v for c in checks) for v in ("PASS", "FAIL", "SKIP")}
    lines.append("")
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    skipped_caps = sorted({c.capability for c in checks if c.verdict == "SKIP" and c.detail.startswith("not offered")})
    for name in skipped_caps:
        lines.append(f"optional capability {name!r} not offered: {capability(name).without}")
    return "\n".join(lines)
