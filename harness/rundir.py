"""The run directory: one folder per run holds everything needed to check and report it again.

Like Jepsen's store, this module is the only one that names the files of a run directory; every
writer and reader asks a `RunDir` for its path. The format of each file is owned by one module
(history.py, timeline.py, counters.py, result.py, observe/snapshot.py ...); docs/run-directory.md describes them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import RunDirError
from harness.procs import process_start

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REPORTS = Path("reports")
RUNS = REPORTS / "runs"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's files. Creating the object touches nothing on disk."""

    path: Path

    @classmethod
    def new(cls, root: Path, name: str) -> RunDir:
        """A fresh, uniquely named directory under `root` (created)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / f"{name}-{stamp}-{int(time.time() * 1000) % 1000:03d}"
        path.mkdir(parents=True)
        return cls(path)

    # What the runner writes before and after the run.
    @property
    def scenario(self) -> Path:
        return self.path / "scenario.yaml"

    @property
    def command(self) -> Path:
        return self.path / "command.txt"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def system(self) -> Path:
        return self.path / "system.json"

    # What the live parts append while the run goes.
    @property
    def history(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def load_figures(self) -> Path:
        """load.json: the open-model generator's figures (harness/loadfile.py)."""
        return self.path / "load.json"

    @property
    def faults(self) -> Path:
        return self.path / "faults.jsonl"

    @property
    def consistency(self) -> Path:
        return self.path / "consistency.jsonl"

    @property
    def settlement(self) -> Path:
        return self.path / "settlement.jsonl"

    @property
    def proxy_counters(self) -> Path:
        """Toxiproxy's byte counters per link at each fault's apply and heal (harness/counters.py)."""
        return self.path / "proxy_counters.jsonl"

    @property
    def ledgers(self) -> Path:
        return self.path / "ledgers.json"

    @property
    def target(self) -> Path:
        """An external run's target file, as it was (its scenario.yaml names it)."""
        return self.path / "target.yaml"

    @property
    def opening(self) -> Path:
        """An external run's money before the load (harness/runner.py record_opening)."""
        return self.path / "opening.json"

    # What the checkers and the report write.
    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def screenshot(self) -> Path:
        return self.path / "report.png"

    # Where services and tools keep their own files.
    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def log(self, name: str) -> Path:
        """logs/<name>.log: `switch`, a bank code, `toxiproxy`, `locust`."""
        return self.logs / f"{name}.log"

    @property
    def data(self) -> Path:
        return self.path / "data"

    def undo_log(self, name: str) -> Path:
        """A service's undo log under the power-loss layer (harness/testbed/powerloss.py)."""
        return self.path / "powerloss" / f"{name}.undo"

    def require(self, *files: Path) -> None:
        """Raise a RunDirError naming what is missing (a killed run leaves a partial directory)."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory", fix="give the folder a run printed")
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise RunDirError(
                f"{self.path}: {', '.join(missing)} missing; the run did not finish collecting",
                fix="run the scenario again (`harness run` with the scenario.yaml it holds)",
            )


# -- the state file of a running `harness up` / `harness ui` -------------------------------------


def up_state_file(out: Path = PROJECT_ROOT / RUNS) -> Path:
    """`<--out>/up.json`: what `harness up` / `harness ui` run, for `harness down` and a plain Locust.

    Written into the same `--out` that `harness down --out` reads. A Locust started by hand looks in
    the project's default (reports/runs/up.json) unless PAYSWITCH_UP_STATE names another file."""
    return out.resolve() / "up.json"


def write_up_state(out: Path, state: dict[str, Any]) -> Path:
    path = up_state_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)  # never a half-written file for a reader
    return path


def running_session(path: Path | None = None) -> dict[str, Any] | None:
    """The state of a running `harness up` / `harness ui` (None if there is none, or its process is gone)."""
    if path is None:
        env = os.environ.get("PAYSWITCH_UP_STATE")
        path = Path(env) if env else up_state_file()
    try:
        state = json.loads(path.read_text())
        pid = int(state["harness_pid"])
        # The pid alone could be another process's by now: its start time must match too.
        if process_start(pid) is None or process_start(pid) != state["harness_started"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None
