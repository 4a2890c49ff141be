"""The switch and bank APIs, over real HTTP against real service processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from support import eventually, get, payment, post

from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system

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
