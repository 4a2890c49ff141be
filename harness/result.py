"""The result of checking a run (`result.json`): one model, written and read here only.

The checkers decide (harness.checkers.run); the report, the suite page, `harness report` and the web
panel read what they decided and never recompute it. The shape is `payswitch-chaos/result/v1`,
described in docs/result-schema.md. Keys are only ever added to it, never renamed, so that every
v1 file stays readable (a file without `checks` predates per-check verdicts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from harness.errors import RunDirError
from harness.rundir import RunDir

SCHEMA = "payswitch-chaos/result/v1"

# A checker's verdict, as in Jepsen: its expectations held, did not, or it could not tell.
Validity = Literal["valid", "invalid", "unknown"]
# The run's verdict, as people and CI read it.
Verdict = Literal["pass", "fail", "unknown"]
VERDICT_OF: dict[Validity, Verdict] = {"valid": "pass", "invalid": "fail", "unknown": "unknown"}


class CheckVerdict(BaseModel):
    """What one checker concluded, with its measurements (`figures`) and, when it could not run, why."""

    model_config = ConfigDict(frozen=True)

    verdict: Validity
    failures: list[str] = Field(default_factory=list)  # each unmet expectation, in words
    error: str | None = None  # set when verdict is unknown: "ExceptionType: message"
    # Kept out of `checks` in result.json: each figure has its own key there (see `Result`).
    figures: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @classmethod
    def judged(cls, failures: list[str], **figures: Any) -> CheckVerdict:
        """Valid when no expectation failed, invalid otherwise."""
        return cls(verdict="invalid" if failures else "valid", failures=failures, figures=figures)

    @classmethod
    def crashed(cls, name: str, error: str) -> CheckVerdict:
        """The checker raised: nothing is known about what it checks, and that must not read as a pass."""
        return cls(verdict="unknown", failures=[f"{name} check could not run: {error}"], error=error)

    @model_serializer(mode="wrap")
    def _without_empty_error(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("error") is None:
            data.pop("error", None)
        return data


@dataclass(frozen=True)
class Breaks:
    """Reconciliation breaks left open: every anomalous payment id, plus every books invariant
    (conservation, positions, windows ...) that does not hold. The one count the banner, the
    scorecard, the console and the suite page show (`reconciliation_breaks`)."""

    payments: int  # anomalous payment ids (reconciliation.anomaly_count)
    books: tuple[str, ...] = ()  # names of the books invariants that do not hold

    @property
    def total(self) -> int:
        return self.payments + len(self.books)

    def detail(self) -> str:
        """'90 payments, books: conservation', or 'none'."""
        if not self.total:
            return "none"
        parts = [f"{self.payments:,} payment{'s' if self.payments != 1 else ''}"] if self.payments else []
        if self.books:
            parts.append(f"books: {', '.join(self.books)}")
        return ", ".join(parts)


def reconciliation_breaks(reconciliation: Mapping[str, Any] | None) -> Breaks | None:
    """The breaks of a `consistency.reconciliation` section as result.json holds it (None when the
    check that measures it could not run)."""
    if reconciliation is None:
        return None
    books = tuple(str(b["name"]) for b in reconciliation.get("books", []) if not b.get("ok", True))
    return Breaks(int(reconciliation.get("anomaly_count") or 0), books)


class ScenarioInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str = ""
    backend: str = "local"
    seed: int | None = None
    source: str | None = None
    # Naive-component scenarios pass when anomalies are caught: more of them is not a regression.
    expects_anomalies: bool = False


class ConsistencyFigures(BaseModel):
    """None where the check that measures a figure could not run (its `checks` entry says why)."""

    model_config = ConfigDict(extra="allow")

    reconciliation: dict[str, Any] | None = None
    customer_view: dict[str, Any] | None = None
    time_to_consistency_s: float | None = None  # 0.0 when no anomaly opened (see anomaly_opened)
    # Added later in v1 (absent, so None, in older files): whether an open anomaly was seen from the
    # last heal on (None: no sample, or not measured), and how precisely the sampler's ticks place
    # the time (the gap between the last tick that saw anomalies and the first that saw none).
    anomaly_opened: bool | None = None
    time_to_consistency_resolution_s: float | None = None


class Result(BaseModel):
    """result.json. Fields in the order the file has always had them; `checks` is new in v1."""

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    schema_id: str = Field(SCHEMA, alias="schema")  # `schema` would shadow a BaseModel method
    scenario: ScenarioInfo
    verdict: Verdict
    failures: list[str] = Field(default_factory=list)  # every check's failures, in check order
    checks: dict[str, CheckVerdict] = Field(default_factory=dict)
    availability: dict[str, Any] | None = None
    bulkhead_success_ratio: float | None = None
    consistency: ConsistencyFigures = Field(default_factory=ConsistencyFigures)
    faults: list[dict[str, Any]] = Field(default_factory=list)
    # Added later in v1 (absent, so None, in older files): what each fault window did, and which
    # had no observable effect (harness/checkers/evidence.py; docs/result-schema.md).
    evidence: dict[str, Any] | None = None
    # Added later in v1 (absent, so None, in older files): the switch's books rebuilt from its
    # transfer records (harness/checkers/replay.py), and what the run put under stress per
    # invariant (harness/checkers/stress.py).
    ledger_replay: dict[str, Any] | None = None
    stress: dict[str, Any] | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    reproduce: str = ""
    run_dir: str = ""

    @property
    def breaks(self) -> Breaks | None:
        """Reconciliation breaks left open (see `Breaks`); None when consistency could not be checked."""
        return reconciliation_breaks(self.consistency.reconciliation)

    @property
    def ok(self) -> bool:
        """Only a pass passes: a check that could not run proves nothing."""
        return self.verdict == "pass"

    def as_json(self) -> dict[str, Any]:
        """The result as result.json holds it (JSON types only), as every reader sees it."""
        # fallback=str: a figure of a type JSON lacks is written as text rather than losing the result.
        return self.model_dump(mode="json", by_alias=True, fallback=str)


def _path_of(path: Path | RunDir) -> Path:
    """result.json itself, or the one in a run directory."""
    if isinstance(path, RunDir):
        return path.result
    return path if path.suffix == ".json" and not path.is_dir() else RunDir(path).result


def write_result(rundir: Path | RunDir, result: Result) -> Path:
    """Write result.json into the run directory, whole or not at all."""
    out = (rundir if isinstance(rundir, RunDir) else RunDir(Path(rundir))).result
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.as_json(), indent=2))
    tmp.replace(out)  # a reader never sees a half-written file
    return out


def read_result(path: Path | RunDir) -> Result:
    """The result of a checked run: `path` is its result.json or the run directory holding it.

    Raises RunDirError saying what is wrong and what to do when there is no result, it cannot be
    read or parsed, or it is of a schema this version does not know."""
    file = _path_of(path)
    recheck = f"run `harness check {file.parent}` to check the run again"
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise RunDirError(f"{file}: no result yet", fix=f"run `harness check {file.parent}` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{file}: cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RunDirError(f"{file}: not valid JSON ({exc}); it may be half-written", fix=recheck) from None
    if not isinstance(data, dict):
        raise RunDirError(f"{file}: expected a JSON object, got {type(data).__name__}", fix=recheck)
    schema = data.get("schema")
    if schema != SCHEMA:
        found = "has no 'schema' key" if schema is None else f"has schema {schema!r}"
        raise RunDirError(f"{file} {found}; this harness reads {SCHEMA!r} only", fix=recheck)
    try:
        return Result.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise RunDirError(f"{file}: not a valid {SCHEMA} result: {problems}", fix=recheck) from None
