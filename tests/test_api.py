"""The switch and bank APIs, over real HTTP against real service processes."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from support import eventually, exchange, get, payment, post

from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system
from mock_switch.api import Answer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    system = build_system(
        banks=3,
        accounts=100,
        net_debit_cap=100_000,
        payee_timeout_s=0.3,
        switch_timeout_s=0.8,
        customer_timeout_s=1.0,
    )
    with LocalTopology(system, tmp_path_factory.mktemp("api")) as t:
        yield t


def pid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def test_happy_path_moves_money_and_positions(topo: LocalTopology) -> None:
    a, b, s = topo.bank("BNKA").url, topo.bank("BNKB").url, topo.switch.url
    before_a = get(a + "/totals")[1]["customer_balances"]
    before_b = get(b + "/totals")[1]["customer_balances"]
    p = pid()
    assert post(a + "/payments", payment(p, amount=2_500)) == (200, {"payment_id": p, "status": "ACSC"})
    assert get(a + "/totals")[1]["customer_balances"] == before_a - 2_500
    assert get(b + "/totals")[1]["customer_balances"] == before_b + 2_500
    assert get(s + f"/transfers/{p}")[1]["status"] == "ACSC"
    assert get(b + f"/credits/{p}")[1]["status"] == "ACCP"
    assert get(a + f"/payments/{p}")[1]["status"] == "ACSC"


def test_name_enquiry_by_account_and_msisdn(topo: LocalTopology) -> None:
    a = topo.bank("BNKA").url
    status, party = get(a + "/parties/0200000003")
    assert status == 200 and party["bank"] == "BNKB" and party["name"]
    assert get(a + "/parties/" + party["msisdn"].replace("+", "%2B"))[1]["account"] == "0200000003"
    status, body = get(a + "/parties/0999999999")
    assert status == 404 and body["reason"] == "AC01"


@pytest.mark.parametrize(
    ("change", "reason", "http"),
    [
        ({"amount": 2_000_000}, "AM04", 422),  # more than the customer has
        ({"amount": 150_000}, "AM23", 422),  # within the balance, above the bank's net debit cap
        ({"creditor_account": "0299999999"}, "AC01", 422),
        ({"creditor_account": "0200000049"}, "AC06", 422),  # every 50th account is blocked
        ({"debtor_account": "0199999999"}, "AC01", 422),
    ],
)
def test_business_rejections_are_definitive_and_move_no_money(
    topo: LocalTopology, change: dict[str, object], reason: str, http: int
) -> None:
    a, s = topo.bank("BNKA").url, topo.switch.url
    before = get(a + "/totals")[1]["customer_balances"]
    p = pid()
    status, body = post(a + "/payments", {**payment(p), **change})
    assert (status, body["status"], body["reason"]) == (http, "RJCT", reason)
    assert get(a + "/totals")[1]["customer_balances"] == before
    assert get(a + f"/payments/{p}")[1] == {"payment_id": p, "status": "RJCT", "reason": reason}
    positions = {row["bank"]: row for row in get(s + "/participants")[1]}
    assert positions["BNKA"]["reserved"] == 0


def test_idempotent_replay_and_duplicate(topo: LocalTopology) -> None:
    a, b = topo.bank("BNKA").url, topo.bank("BNKB").url
    p = pid()
    first = post(a + "/payments", payment(p))
    before = get(b + "/totals")[1]["customer_balances"]
    assert post(a + "/payments", payment(p)) == first  # same id + same body: same answer
    assert get(b + "/totals")[1]["customer_balances"] == before  # and no second credit
    status, body = post(a + "/payments", payment(p, amount=999))
    assert (status, body["reason"]) == (409, "DUPL")
    # The switch applies the same rule to banks that replay a transfer.
    transfer = {**payment(p), "debtor_bank": "BNKA"}
    assert post(topo.switch.url + "/transfers", transfer)[1]["status"] == "ACSC"
    status, body = post(topo.switch.url + "/transfers", {**transfer, "amount": 1})
    assert (status, body["reason"]) == (409, "DUPL")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"payment_id": "x"}', "field 'debtor_account'"),
        (None, "field 'amount'"),  # negative amount, filled in below
        (None, "field 'unexpected'"),
        (None, "field 'currency'"),
        (None, "field 'creditor_bank'"),  # on-us
    ],
)
def test_malformed_payment_is_ff01_naming_the_field_and_writes_nothing(
    topo: LocalTopology, raw: bytes | None, field: str
) -> None:
    a = topo.bank("BNKA").url
    p = pid()
    body = payment(p)
    if "amount" in field:
        body["amount"] = -5
    elif "unexpected" in field:
        body["unexpected"] = 1
    elif "currency" in field:
        body["currency"] = "KES"
    elif "creditor_bank" in field:
        body["creditor_bank"] = "BNKA"
    status, answer = post(a + "/payments", raw=raw if raw is not None else json.dumps(body).encode())
    assert status == 400 and answer["reason"] == "FF01" and answer["status"] == "RJCT"
    assert field in answer["message"]
    assert not [row for row in get(a + "/payments")[1] if row["payment_id"] == p]


def test_malformed_requests_to_switch_and_credit_endpoints(topo: LocalTopology) -> None:
    status, body = post(topo.switch.url + "/transfers", {"payment_id": "x", "amount": "1"})
    assert status == 400 and body["reason"] == "FF01"
    status, body = post(topo.bank("BNKB").url + "/credits", {"payment_id": "x"})
    assert status == 400 and body["reason"] == "FF01"
    status, body = post(topo.switch.url + "/settlement/windows/abc/settle")
    assert status == 400 and "window_id" in body["message"]
    status, body = get(topo.switch.url + "/no/such/route")
    assert status == 404 and body["reason"] == "FF01"


def test_status_query_never_seen_is_remembered_and_refuses_a_late_transfer(topo: LocalTopology) -> None:
    s = topo.switch.url
    p = pid()
    status, body = get(s + f"/transfers/{p}")
    assert (status, body["payment_id"], body["status"], body["reason"]) == (422, p, "RJCT", "AG09")
    late = {**payment(p), "debtor_bank": "BNKA"}
    status, body = post(s + "/transfers", late)
    assert (status, body["status"], body["reason"]) == (504, "RJCT", "AB06")
    # The payee bank does the same for credits.
    b = topo.bank("BNKB").url
    q = pid()
    assert get(b + f"/credits/{q}")[1]["reason"] == "AG09"
    credit = {k: v for k, v in payment(q).items() if k != "creditor_bank"} | {"debtor_bank": "BNKA"}
    assert post(b + "/credits", credit)[1]["reason"] == "AB05"


def test_status_query_pending_then_committed_with_a_slow_payee(topo: LocalTopology) -> None:
    """The payee's core banking takes 1.5 s; the switch's deadline is 0.3 s and the customer's 1 s.
    A robust system answers PDNG, resolves by status query, and ends ACSC everywhere."""
    a, b, s = topo.bank("BNKA").url, topo.bank("BNKB").url, topo.switch.url
    assert post(b + "/admin/behaviour", {"credit_delay_ms": 1500})[0] == 200
    try:
        p = pid()
        status, body = post(a + "/payments", payment(p))
        assert (status, body["status"]) == (202, "PDNG")
        assert get(s + f"/transfers/{p}")[1]["status"] == "PDNG"
        assert get(a + f"/payments/{p}")[1]["status"] == "PDNG"
        eventually(lambda: get(a + f"/payments/{p}")[1]["status"] == "ACSC", what="payment to settle")
        assert get(s + f"/transfers/{p}")[1]["status"] == "ACSC"
        assert get(b + f"/credits/{p}")[1]["status"] == "ACCP"
    finally:
        post(b + "/admin/behaviour", {"credit_delay_ms": 0})


def test_settlement_window_close_and_settle(topo: LocalTopology) -> None:
    a, s = topo.bank("BNKA").url, topo.switch.url
    opening = {row["bank"]: row["settlement_balance"] for row in get(s + "/participants")[1]}
    assert post(a + "/payments", payment(pid(), amount=7_000))[1]["status"] == "ACSC"
    status, closed = post(s + "/settlement/windows/close")
    assert status == 200 and closed["state"] == "CLOSED"
    assert sum(closed["net_positions"].values()) == 0
    assert closed["transfer_count"] >= 1
    wid = closed["window_id"]
    status, settled = post(s + f"/settlement/windows/{wid}/settle")
    assert status == 200 and settled["state"] == "SETTLED"
    after = {row["bank"]: row for row in get(s + "/participants")[1]}
    for bank, net in closed["net_positions"].items():
        assert after[bank]["settlement_balance"] == opening[bank] - net
    assert sum(r["settlement_balance"] for r in after.values()) == sum(opening.values())
    moves = [m for m in get(s + "/settlement/movements")[1] if m["window_id"] == wid]
    assert {m["bank"]: -m["amount"] for m in moves} == closed["net_positions"]
    # Settling again changes nothing; the new window is open and cannot be settled.
    assert post(s + f"/settlement/windows/{wid}/settle")[1] == settled
    windows = get(s + "/settlement/windows")[1]
    open_ids = [w["window_id"] for w in windows if w["state"] == "OPEN"]
    assert len(open_ids) == 1 and open_ids[0] > wid
    assert post(s + f"/settlement/windows/{open_ids[0]}/settle")[0] == 409
    assert post(s + "/settlement/windows/9999/settle")[0] == 404


def test_openapi_documents_describe_the_routes(topo: LocalTopology) -> None:
    switch_doc = get(topo.switch.url + "/openapi.json")[1]
    bank_doc = get(topo.bank("BNKA").url + "/openapi.json")[1]
    assert switch_doc["openapi"].startswith("3.")
    assert {"/transfers", "/transfers/{payment_id}", "/settlement/windows/close"} <= set(switch_doc["paths"])
    assert {"/payments", "/credits", "/credits/{payment_id}"} <= set(bank_doc["paths"])
    schema = bank_doc["components"]["schemas"]["PaymentRequest"]
    assert set(schema["required"]) >= {"payment_id", "amount", "creditor_bank"}
    # Every documented read route is really served.
    for url, doc in ((topo.switch.url, switch_doc), (topo.bank("BNKA").url, bank_doc)):
        for path, ops in doc["paths"].items():
            if "get" in ops and "{" not in path:
                assert get(url + path)[0] == 200, path


def test_health(topo: LocalTopology) -> None:
    status, body = get(topo.switch.url + "/health")
    assert status == 200 and body["status"] == "up" and body["pid"] == topo.switch.pid


def test_a_window_closed_with_a_transfer_in_flight_waits_for_it(topo: LocalTopology) -> None:
    """The transfer commits into the window it was reserved in; until then the window is CLOSING
    and cannot be settled."""
    import threading

    a, b, s = topo.bank("BNKA").url, topo.bank("BNKB").url, topo.switch.url
    assert post(b + "/admin/behaviour", {"credit_delay_ms": 1500})[0] == 200
    try:
        p = pid()
        paying = threading.Thread(target=post, args=(a + "/payments", payment(p)))
        paying.start()

        def transfer() -> dict[str, object]:
            # The read endpoint, not a status query: asking about an id the switch has not seen yet
            # would make it remember "not received" and refuse the payment (as designed).
            return next((t for t in get(s + "/transfers")[1] if t["payment_id"] == p), {})

        eventually(lambda: transfer().get("status") == "PDNG", what="the transfer to be reserved")
        status, closing = post(s + "/settlement/windows/close")
        assert (status, closing["state"]) == (200, "CLOSING")
        status, body = post(s + f"/settlement/windows/{closing['window_id']}/settle")
        assert status == 409 and "still closing" in body["message"]
        paying.join(20)
        eventually(lambda: transfer().get("status") == "ACSC", what="the transfer to commit")
        closed = get(s + f"/settlement/windows/{closing['window_id']}")[1]
        assert closed["state"] == "CLOSED" and closed["transfer_count"] >= 1
        assert [t["window_id"] for t in get(s + "/transfers")[1] if t["payment_id"] == p] == [closing["window_id"]]
        assert post(s + f"/settlement/windows/{closing['window_id']}/settle")[1]["state"] == "SETTLED"
    finally:
        post(b + "/admin/behaviour", {"credit_delay_ms": 0})


# -- bad input never crashes, never lies, never writes ---------------------------------------------

# `str.isdigit()` accepts '²' and '٣' (and `int()` then raises); SQLite stops at 2**63-1.
BAD_INTEGERS = ["²", "٣", "9" * 26, str(2**63), "-1", "+1", " 1", "1_0", "1.0", "0x1"]
# Valid values for the path parameters the routes have (a new parameter must be given one here).
VALID_PATH = {"payment_id": pid, "party_id": lambda: "0200000003", "window_id": lambda: "1"}


def valid_body(schema_ref: str) -> dict[str, object]:
    model = schema_ref.rsplit("/", 1)[-1]
    transfer = {**payment(pid()), "debtor_bank": "BNKA"}
    return {
        "PaymentRequest": payment(pid()),
        "TransferRequest": transfer,
        "CreditRequest": {k: v for k, v in transfer.items() if k != "creditor_bank"},
        "BehaviourRequest": {"credit_delay_ms": 0},
    }[model]


@dataclass(frozen=True)
class Route:
    url: str  # the service's base URL
    method: str
    path: str  # template, e.g. /settlement/windows/{window_id}
    op: dict[str, Any]  # its OpenAPI operation

    def params(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.op.get("parameters", []) if p["in"] == where]

    def send(self, where: str = "", name: str = "", value: str = "") -> tuple[int, Any, Any]:
        """Call the route with valid values everywhere but `name` (in `where`), which gets `value`."""
        path = self.path
        for p in self.params("path"):
            v = value if (where, name) == ("path", p["name"]) else VALID_PATH[p["name"]]()
            path = path.replace("{" + p["name"] + "}", quote(v, safe=""))
        query = f"?{name}={quote(value, safe='')}" if where == "query" else ""
        headers = {"Content-Type": "application/json"}
        if where == "header":  # http.client sends str headers as latin-1: these bytes are the UTF-8
            headers[name] = value.encode().decode("latin-1")
        body = self.op.get("requestBody")
        data = valid_body(body["content"]["application/json"]["schema"]["$ref"]) if body else None
        return exchange(self.method, self.url + path + query, data, headers=headers)


def served_routes(topo: LocalTopology, tmp_path: Path) -> list[Route]:
    """Every route the services' routers serve (HEAD aside), each with its documented operation.
    Read from the services' real routing tables, so a route added later is covered without touching the tests."""
    from mock_switch.bank import BankService
    from mock_switch.switch import SwitchService

    services = [
        (SwitchService(topo.system, tmp_path / "switch"), topo.switch.url),
        (BankService(topo.system, "BNKA", tmp_path / "bank"), topo.bank("BNKA").url),
    ]
    routes = []
    for service, url in services:
        for method, path in service.router.routes():
            op = service.openapi["paths"].get(path, {}).get(method.lower())
            assert op is not None, f"{service.name} serves {method} {path}, which its OpenAPI document omits"
            routes.append(Route(url, method, path, op))
        service.store.close()
    return routes


def refused_naming(answer: tuple[int, Any, Any], name: str, status: int = 400) -> bool:
    code, _, body = answer
    Answer.model_validate(body)  # every refusal has the documented body
    return (code, body["status"], body.get("reason")) == (status, "RJCT", "FF01") and f"'{name}'" in body["message"]


@pytest.mark.parametrize("bad", BAD_INTEGERS)
def test_every_integer_parameter_is_parsed_strictly(topo: LocalTopology, tmp_path: Path, bad: str) -> None:
    checked = set()
    for route in served_routes(topo, tmp_path):
        for where in ("path", "query", "header"):
            for p in route.params(where):
                # A header's surrounding spaces are not part of its value (RFC 9110 5.5).
                if p["schema"].get("type") == "integer" and not (where == "header" and bad != bad.strip()):
                    answer = route.send(where, p["name"], bad)
                    assert refused_naming(answer, p["name"]), (route.method, route.path, p["name"], answer[::2])
                    checked.add((route.method, route.path, p["name"]))
    # The routers really have integer parameters in each place (a guard against checking nothing).
    assert {("GET", "/settlement/windows/{window_id}", "window_id"), ("GET", "/entries", "after"),
            ("GET", "/payments", "limit"), ("GET", "/transfers", "limit")} <= checked  # fmt: skip
    assert ("POST", "/transfers", "X-Deadline-Ms") in checked or bad != bad.strip()


def test_every_path_parameter_refuses_what_no_id_can_be_and_nothing_answers_5xx(
    topo: LocalTopology, tmp_path: Path
) -> None:
    routes = served_routes(topo, tmp_path)
    query_names = {p["name"] for r in routes for p in r.params("query")}
    for route in routes:
        for p in route.params("path"):
            for bad in ("²", "a b", "x" * 65, "é", "a/b", "../transfers", "\x00"):
                assert refused_naming(route.send("path", p["name"], bad), p["name"]), (route.path, bad)
        if route.method == "GET":  # every known query parameter, even where it means nothing
            for name in query_names:
                for bad in (*BAD_INTEGERS, "", "x" * 1000, "é", "\x00"):
                    code, _, body = route.send("query", name, bad)
                    assert code < 500, (route.path, name, bad, body)


def db_rows(topo: LocalTopology, service: str, table: str) -> int:
    db = topo.run_dir / "data" / service / f"{service.lower()}.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.mark.parametrize(
    "bad_id",
    ["x" * 65, "x" * 5000, "a b", "²", "é", "a/b", "'; DROP TABLE transfers; --", "\x00", "%", ".."],
)
def test_a_status_query_about_an_impossible_id_stores_nothing(topo: LocalTopology, bad_id: str) -> None:
    """A robust service remembers 'not received' for an id it is asked about; an id that no payment
    could carry is refused before that (400 FF01), so status queries cannot fill the disk."""
    queries = [("switch", topo.switch.url + "/transfers/", "transfers"),
               ("BNKA", topo.bank("BNKA").url + "/payments/", "payments"),
               ("BNKB", topo.bank("BNKB").url + "/credits/", "credits")]  # fmt: skip
    for service, url, table in queries:
        before = db_rows(topo, service, table)
        answer = exchange("GET", url + quote(bad_id, safe=""))
        assert refused_naming(answer, "payment_id"), (url, answer[::2])
        assert db_rows(topo, service, table) == before, url
        # The same count sees a valid id being remembered, so it would see an invalid one too.
        assert get(url + pid())[1]["reason"] == "AG09"
        assert db_rows(topo, service, table) == before + 1


def money(topo: LocalTopology) -> list[Any]:
    """The books a payment touches: both banks' money and rows, the switch's positions and transfers."""
    a, b, s = topo.bank("BNKA").url, topo.bank("BNKB").url, topo.switch.url
    reads = [a + "/totals", a + "/payments", b + "/totals", b + "/credits", s + "/participants", s + "/transfers"]
    return [get(url)[1] for url in reads]


def body_endpoints(topo: LocalTopology, p: str) -> list[tuple[str, dict[str, object]]]:
    transfer = {**payment(p), "debtor_bank": "BNKA"}
    return [
        (topo.bank("BNKA").url + "/payments", payment(p)),
        (topo.switch.url + "/transfers", transfer),
        (topo.bank("BNKB").url + "/credits", {k: v for k, v in transfer.items() if k != "creditor_bank"}),
    ]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/json; charset=latin-1", "application/jsonp", "application/octet-stream"],
)  # fmt: skip
def test_a_body_not_sent_as_json_is_415_and_moves_no_money(topo: LocalTopology, content_type: str) -> None:
    before = money(topo)
    p = pid()
    for url, body in body_endpoints(topo, p):
        answer = exchange("POST", url, body, headers={"Content-Type": content_type})
        code, _, reply = answer
        Answer.model_validate(reply)
        assert (code, reply["status"], reply["reason"]) == (415, "RJCT", "FF01"), (url, reply)
        assert "application/json" in reply["message"]
    assert money(topo) == before
    # The same bodies as application/json do move money (the refusals above are not an outage).
    assert post(topo.bank("BNKA").url + "/payments", payment(p))[1]["status"] == "ACSC"


@pytest.mark.parametrize("key", ["amount", "payment_id", "creditor_account"])
def test_a_key_given_twice_is_ff01_naming_it_and_moves_no_money(topo: LocalTopology, key: str) -> None:
    before = money(topo)
    p = pid()
    for url, body in body_endpoints(topo, p):
        second = {"amount": 99_999_999, "payment_id": pid(), "creditor_account": "0200000007"}[key]
        raw = json.dumps(body)[:-1] + f", {json.dumps(key)}: {json.dumps(second)}}}"
        answer = exchange("POST", url, raw=raw.encode())
        assert refused_naming(answer, key), (url, answer[::2])
        assert "more than once" in answer[2]["message"]
    assert money(topo) == before


def test_a_wrong_method_is_405_with_allow(topo: LocalTopology) -> None:
    for url, method, allowed in ((topo.switch.url + "/health", "POST", {"GET", "HEAD"}),
                                 (topo.bank("BNKA").url + "/payments", "DELETE", {"GET", "HEAD", "POST"}),
                                 (topo.switch.url + "/settlement/windows/close", "GET", None)):  # fmt: skip
        code, headers, body = exchange(method, url)
        Answer.model_validate(body)
        if allowed is None:  # GET .../close is GET .../{window_id}: a window number is asked for
            assert refused_naming((code, headers, body), "window_id")
            continue
        assert (code, body["status"], body["reason"]) == (405, "RJCT", "FF01")
        assert set(headers["Allow"].replace(" ", "").split(",")) == allowed


def test_window_refusals_and_repeated_parameters_follow_the_schema(topo: LocalTopology) -> None:
    s = topo.switch.url
    for method, url, status in (("POST", s + "/settlement/windows/99999/settle", 404),
                                ("GET", s + "/settlement/windows/99999", 404),
                                ("GET", s + "/settlement/windows/99999999999999999999999999", 400),
                                ("POST", s + "/settlement/windows/0/settle", 400)):  # fmt: skip
        code, _, body = exchange(method, url)
        assert code == status and Answer.model_validate(body).status == "RJCT", (url, body)
    assert refused_naming(exchange("GET", s + "/transfers?limit=1&limit=1000000"), "limit")
    # A name enquiry is one path segment: the bank must not forward '../transfers' to the switch.
    assert refused_naming(exchange("GET", topo.bank("BNKA").url + "/parties/..%2Ftransfers"), "party_id")


def test_an_oversized_body_is_413_with_the_answer_body(topo: LocalTopology) -> None:
    before = money(topo)
    body = {**payment(pid()), "padding": "x" * 70_000}
    code, _, answer = exchange("POST", topo.bank("BNKA").url + "/payments", body)
    assert code == 413 and Answer.model_validate(answer).reason == "FF01"
    assert money(topo) == before
