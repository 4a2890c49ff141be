"""Schemathesis over the switch's and a bank's OpenAPI documents, against real services: no answer is
a 5xx, every answer matches the documents, invalid input is refused, and a refused request changes
nothing in any ledger.

Bounded and repeatable: a fixed number of examples per operation and generation mode, derandomized
(the same examples on every run, in CI too), no example database."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import get

from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system
from mock_switch.openapi import bank_document, switch_document

pytestmark = pytest.mark.slow

EXAMPLES = 25  # per operation and mode
# Derandomized: the examples depend only on the documents, so CI sees what a developer saw.
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck))  # fmt: skip
SERVICES = {"switch": switch_document(), "BNKA": bank_document()}
# Refusals: malformed (400), unknown (404), wrong method (405), DUPL or not settleable (409), too large
# (413), not JSON (415). A 422 is a business answer (AM04, AG09 ...) and may be remembered.
REFUSALS = {400, 404, 405, 409, 413, 415}
# Not positive_data_acceptance: a schema-valid body may still break a rule that no schema can say
# (the run's currency, a debtor bank that is not a participant, an on-us payment): 400 FF01 is right.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]  # fmt: skip
STATS: dict[str, list[float]] = {}  # "service METHOD path mode": [requests, seconds]
ANSWERED: Counter[int] = Counter()  # HTTP status of every answer


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    system = build_system(banks=2, accounts=20, payee_timeout_s=0.3, switch_timeout_s=0.8, customer_timeout_s=1.0)
    with LocalTopology(system, tmp_path_factory.mktemp("fuzz")) as t:
        yield t


def books(topo: LocalTopology) -> dict[str, str]:
    """A digest of every row of every ledger table, per service, read from the database files."""
    digests = {}
    for name in topo.service_names:
        db = topo.run_dir / "data" / name / f"{name.lower()}.db"
        h = hashlib.blake2b(digest_size=16)
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                # Sorted here: WITHOUT ROWID tables have no rowid to order by.
                for row in sorted(repr(tuple(r)) for r in conn.execute(f"SELECT * FROM {table}")):
                    h.update(repr((table, row)).encode())
        digests[name] = h.hexdigest()
    return digests


def quiet(topo: LocalTopology) -> dict[str, str]:
    """The books once nothing is moving: payments accepted by earlier examples may still be driven."""
    deadline = time.monotonic() + 20
    previous = books(topo)
    while (current := books(topo)) != previous:
        assert time.monotonic() < deadline, "the ledgers kept changing for 20 s"
        time.sleep(0.05)
        previous = current
    return current


def test_the_served_documents_are_the_published_ones(topo: LocalTopology) -> None:
    for name, document in SERVICES.items():
        service = "switch" if name == "switch" else "bank"
        printed = subprocess.run([sys.executable, "-m", "mock_switch", "openapi", service], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
        served = get(topo.services[name].url + "/openapi.json")[1]
        assert json.loads(printed) == served == json.loads(json.dumps(document))


OPERATIONS = [
    pytest.param(name, method.upper(), path, mode, id=f"{name}-{method.upper()} {path}-{mode.value}")
    for name, document in SERVICES.items()
    for path, ops in document["paths"].items()
    for method, op in ops.items()
    # Negative examples need an input to break: an operation without parameters or body has none.
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "parameters" in op or "requestBody" in op
]


@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print what was run: operations, examples sent, time (the figures the README quotes)."""
    yield
    if STATS:
        ops = {key.rsplit(" ", 1)[0] for key in STATS}
        line = (f"schemathesis: {len(ops)} operations, {len(STATS)} operation x mode runs,"
                f" {sum(int(c) for c, _ in STATS.values())} requests, {sum(t for _, t in STATS.values()):.1f} s;"
                f" answers {dict(sorted(ANSWERED.items()))}")  # fmt: skip
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # shown on a passing run too
                reporter.write_line("\n" + line)


@pytest.mark.parametrize(("service", "method", "path", "mode"), OPERATIONS)
def test_operation(topo: LocalTopology, service: str, method: str, path: str, mode: GenerationMode) -> None:
    url = topo.services[service].url
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operation = schema[path][method]
    started, calls = time.monotonic(), 0

    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        nonlocal calls
        before = quiet(topo)
        response = case.call(base_url=url, timeout=15)
        calls += 1
        ANSWERED[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if response.status_code in REFUSALS:
            assert quiet(topo) == before, f"{response.status_code} {response.text}: the books changed"

    check()
    STATS[f"{service} {method} {path} {mode.value}"] = [calls, time.monotonic() - started]
