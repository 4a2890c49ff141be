"""The run directory: one folder per run holds everything needed to check and report it again.

Like Jepsen's store, this module is the only one that names the files of a run directory; every
writer and reader asks a `RunDir` for its path. The format of each file is owned by one module
(history.py, timeline.py, result.py, observe/snapshot.py ...); docs/run-directory.md describes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import RunDirError

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
    def faults(self) -> Path:
        return self.path / "faults.jsonl"

    @property
    def consistency(self) -> Path:
        return self.path / "consistency.jsonl"

    @property
    def settlement(self) -> Path:
        return self.path / "settlement.jsonl"

    @property
    def ledgers(self) -> Path:
        return self.path / "ledgers.json"

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


def up_state_file(out: Path) -> Path:
    """Where `harness up` and `harness ui` say what they run (read by `harness down` and the Locust panel)."""
    return out / "up.json"
