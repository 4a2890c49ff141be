"""Ledger export files: a target's books written by its own system, read instead of the read API.

A target file may say `ledgers: {from: export, dir: DIR}` (harness/target.py): the reconciliation,
conservation and settlement checks then judge what the user's system wrote to DIR, one JSON Lines
file per table (docs/contract.md, "Ledger export files"), each line one row of the contract's read
API (the row models of harness/contract.py):

    DIR/switch/transfers.jsonl                 required
    DIR/switch/participants.jsonl              capability positions
    DIR/switch/windows.jsonl                   capability settlement
    DIR/switch/movements.jsonl                 capability settlement
    DIR/banks/<CODE>/payments.jsonl            required, per participant
    DIR/banks/<CODE>/credits.jsonl             required, per participant
    DIR/banks/<CODE>/accounts.jsonl            capability bank_books
    DIR/banks/<CODE>/entries.jsonl             capability bank_books

`read` builds the same snapshot (harness/ledgers.py) the read API gives; every row is validated,
and a bad one is an `ExportError` naming the file, the line, the field and the fix. `write` is the
inverse (a snapshot into the format): a reference exporter, and what the tests use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.contract import (
    AccountRow,
    CreditRow,
    EntryRow,
    MovementRow,
    ParticipantRow,
    PaymentRow,
    TransferRow,
    WindowRow,
)
from harness.errors import HarnessError
from harness.ledgers import Snapshot

# Snapshot key -> (capability, row model); the file is KEY.jsonl.
SWITCH_TABLES: dict[str, tuple[str, type[BaseModel]]] = {
    "transfers": ("switch_reads", TransferRow),
    "participants": ("positions", ParticipantRow),
    "windows": ("settlement", WindowRow),
    "movements": ("settlement", MovementRow),
}
BANK_TABLES: dict[str, tuple[str, type[BaseModel]]] = {
    "payments": ("bank_reads", PaymentRow),
    "credits": ("bank_reads", CreditRow),
    "accounts": ("bank_books", AccountRow),
    "entries": ("bank_books", EntryRow),
}
FORMAT_DOC = "see 'Ledger export files' in docs/contract.md"


class ExportError(HarnessError, ValueError):
    """A ledger export file is missing or malformed: file, line, field and fix named."""


def _table(path: Path, model: type[BaseModel], capability: str) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fix = f"have your exporter write it ({FORMAT_DOC})"
        if capability not in ("switch_reads", "bank_reads"):
            fix += f", or drop {capability} from the target file's capabilities: (those checks will not apply)"
        raise ExportError(f"{path}: no such export file", fix) from None
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path}: not UTF-8 text ({exc.reason})", "write the export as UTF-8") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportError(
                f"{path}: line {number}: not JSON ({exc.msg} at column {exc.colno})",
                f"one JSON object per line ({FORMAT_DOC})",
            ) from None
        if not isinstance(row, dict):
            raise ExportError(f"{path}: line {number}: a row is a JSON object, got {type(row).__name__}", FORMAT_DOC)
        try:
            model.model_validate(row)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(row)"
            got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
            raise ExportError(
                f"{path}: line {number}: field {field}: {err['msg']}{got}",
                f"write every field of a {model.__name__} row ({FORMAT_DOC})",
            ) from None
        rows.append(row)
    return rows


def read(directory: Path, codes: list[str], offers: Callable[[str], bool]) -> Snapshot:
    """The snapshot the export in `directory` holds, for banks `codes`, reading only the tables of
    the capabilities offered (the others are named in `not_offered`, as the read API's snapshot)."""
    if not directory.is_dir():
        raise ExportError(
            f"{directory}: no such export directory", f"check ledgers.dir in the target file; {FORMAT_DOC}"
        )
    snap: Snapshot = {
        "taken_at": time.time(),
        "switch": {
            key: _table(directory / "switch" / f"{key}.jsonl", model, cap)
            for key, (cap, model) in SWITCH_TABLES.items()
            if offers(cap)
        },
        "banks": {
            code: {
                key: _table(directory / "banks" / code / f"{key}.jsonl", model, cap)
                for key, (cap, model) in BANK_TABLES.items()
                if offers(cap)
            }
            for code in codes
        },
    }
    missing = sorted({cap for cap, _ in (*SWITCH_TABLES.values(), *BANK_TABLES.values()) if not offers(cap)})
    if missing:
        snap["not_offered"] = missing
    return snap


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(path)


def write(snap: Snapshot, directory: Path) -> None:
    """A snapshot (the read API's shape) as export files: what a user's exporter writes."""
    for key, rows in snap["switch"].items():
        if key in SWITCH_TABLES:
            _write(directory / "switch" / f"{key}.jsonl", rows)
    for code, books in snap["banks"].items():
        for key, rows in books.items():
            if key in BANK_TABLES:
                _write(directory / "banks" / code / f"{key}.jsonl", rows)
