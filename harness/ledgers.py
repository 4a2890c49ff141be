"""ledgers.json: every ledger of the system under test after quiescence, as one JSON document.

The live side takes it over the services' read endpoints (harness/observe/snapshot.py); the checkers
and the report read it from the run directory. Its shape is the services' own read API: `switch`
(transfers, positions, windows ...) and `banks` (per bank code: payments, credits, accounts ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Snapshot = dict[str, Any]


def save(snapshot: Snapshot, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot))
    tmp.replace(path)  # never a half-written snapshot for a checker


def load(path: Path) -> Snapshot:
    return json.loads(path.read_text())  # type: ignore[no-any-return]
