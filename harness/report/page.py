"""The HTML resilience report: one self-contained page per run, and the suite page.

Everything comes from the files of a run directory (result.json first, then the history, the fault
timeline, the consistency samples and the ledgers), so `harness report RUN_DIR` rebuilds the same
page later. Pages are Jinja2 templates; the charts are uPlot (vendored under templates/vendor with
its licence), inlined so that a report opens offline and makes no network request.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from harness.errors import RunDirError
from harness.fmt import NA as NA  # re-exported: readers use report.NA, fmt_duration and fmt_money
from harness.fmt import VERDICT_TEXT, fmt_measured, fmt_time_to_consistency, shown_verdict
from harness.fmt import fmt_duration as fmt_duration
from harness.fmt import fmt_money as fmt_money
from harness.history import BUSINESS_REASONS, is_available, read_history
from harness.links import endpoints, link_names, payment_route
from harness.result import Breaks, read_result, reconciliation_breaks
from harness.rundir import RunDir
from harness.timeline import fault_windows

TEMPLATES = Path(__file__).parent / "templates"
INDEX_FILE = "index.html"
BASELINES_FILE = "baselines.json"

# Charts keep at most this many points per series: a 5-minute run stays at one point per second,
# longer runs are merged into coarser buckets so the page stays small and quick.
MAX_POINTS = 600
EXAMPLES_PER_CLASS = 5

# Common availability tiers (a year at 99.99 % allows about 53 minutes of downtime).
AVAILABILITY_TIERS = (0.999, 0.9995, 0.9999)
# CPMI-IOSCO PFMI Principle 17 (key consideration 6): critical systems resume within two hours.
PFMI_RTO_S = 2 * 3600.0

# What counts as a regression on the suite page, against the previous or the baseline run. Short
# chaos runs are noisy (a few thousand payments, a 2 s consistency sampler, recovery decided on 1 s
# buckets), so each rule needs a change beyond that noise, not just any change.
REGRESSION_RULES = {
    "availability": "overall success ratio lower by more than 0.1 percentage point, and significant"
    " (two-proportion z-test, z > 3)",
    "breaks": "more reconciliation breaks (scenarios expecting consistency), or lost acknowledged payments",
    "recovery": "time to recover slower by more than 50 % and 2 s (run-to-run noise); time to consistency"
    " slower by more than 50 % and 2.5 s (2 s sampler)",
    "latency": "worst-phase p99 higher by more than 50 % and 250 ms",
    "verdict": "the verdict went from pass to fail (or unknown: a check could not run)",
}


def _env(currency: str = "") -> jinja2.Environment:
    """The templates' environment. `money` writes an amount in the run's currency, so that no
    template can print one in another format (harness.fmt.fmt_money is the one format)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,  # a typo in a template is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, dur=fmt_duration, ms=fmt_ms, when=fmt_when)
    env.filters.update(ttr=fmt_ttr, ttc=fmt_ttc, bytes=fmt_bytes, money=lambda minor: fmt_money(minor, currency))
    env.globals["verdict_text"] = VERDICT_TEXT
    env.globals["vendor"] = _vendor
    return env


def _vendor(name: str) -> str:
    return (TEMPLATES / "vendor" / name).read_text()


# -- formatting (what people read) ----------------------------------------------------------------


def fmt_num(x: float | int | None, digits: int = 0) -> str:
    if x is None:
        return NA
    return f"{x:,.{digits}f}"


def fmt_pct(ratio: float | None, digits: int = 2) -> str:
    """0.99953 -> '99.95 %'; never rounds a miss up to 100 %."""
    if ratio is None:
        return NA
    pct = ratio * 100
    shown = f"{pct:.{digits}f}"
    if ratio < 1 and float(shown) >= 100:
        shown = f"{math.floor(pct * 10**digits) / 10**digits:.{digits}f}"
    return f"{shown} %"


def fmt_ms(ms: float | None) -> str:
    return NA if ms is None else f"{ms:,.0f} ms"


def fmt_ttr(summary: Mapping[str, Any]) -> str:
    """Time to recover of a run summary (below), with its resolution when it has one."""
    return fmt_measured(summary.get("time_to_recover_s"), summary.get("time_to_recover_resolution_s"))


def fmt_ttc(summary: Mapping[str, Any]) -> str:
    """Time to consistency of a run summary: 'no anomaly opened', 'never', or the time and its resolution.
    A summary from before `anomaly_opened` (a saved baseline) says "never" only when anomalies were left."""
    opened = summary.get("anomaly_opened")
    if opened is None and summary.get("time_to_consistency_s") is None and summary.get("anomalies"):
        opened = True
    return fmt_time_to_consistency(
        summary.get("time_to_consistency_s"), opened, summary.get("time_to_consistency_resolution_s")
    )


def fmt_when(epoch: float | None) -> str:
    if epoch is None:
        return NA
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


# -- the per-run report ---------------------------------------------------------------------------


def write_report(
    run_dir: Path,
    result: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    ledgers: Mapping[str, Any] | None = None,
) -> Path:
    """Render `report.html` in the run directory from its saved files (the checker may hand over the
    result, the history and the ledgers it already holds)."""
    model = report_model(run_dir, result, history, ledgers)
    html = _env(model["currency"]).get_template("report.html.j2").render(**model)
    out = RunDir(run_dir).report
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)  # never a half-written report
    return out


def report_model(
    run_dir: Path,
    result: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    ledgers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the report template shows, as plain data."""
    rundir = RunDir(run_dir)
    if result is None:
        result = read_result(run_dir).as_json()
    scenario = yaml.safe_load(rundir.scenario.read_text()) or {}
    system = json.loads(rundir.system.read_text())
    if ledgers is None and rundir.ledgers.exists():
        ledgers = json.loads(rundir.ledgers.read_text())
    if history is None:
        history_path = rundir.history
        history = read_history(history_path) if history_path.exists() else []
    samples = _jsonl(rundir.consistency)

    # A section is null when the check measuring it could not run: the page still says what is known.
    avail = result.get("availability") or {}
    start = avail.get("start") or 0.0
    currency = system.get("currency", "")
    expect = scenario.get("expect") or {}
    slo_ms = float(
        (avail.get("slo") or {}).get("latency_slo_ms")
        or (expect.get("availability") or {}).get("latency_slo_ms")
        or 2000
    )
    payments = [op for op in history if op.get("op", "payment") == "payment"]
    # Absolute (apply, heal) of every fault window, paired as the availability checker pairs them.
    windows_active = [(w.apply, w.end) for w in fault_windows(result.get("faults", []))]
    touched = _touched(result.get("faults", []))

    summary = run_summary(result)
    rows = scorecard(result, scenario, ledgers)
    charts = chart_data(avail, samples, start)
    if (expect.get("availability") or {}).get("baseline_success_ratio", 0.99) is None:
        charts["slo_pct"] = None  # null in the scenario: no target, and no target line drawn
    return {
        "r": result,
        "run_name": run_dir.name,
        "scenario": scenario,
        "system": system,
        "currency": currency,
        "summary": summary,
        "scorecard": rows,
        "banner": banner_verdict(rows, summary["expects_anomalies"]),
        "unknown_checks": {n: v for n, v in (result.get("checks") or {}).items() if v["verdict"] == "unknown"},
        "schedule": fault_schedule(scenario, avail.get("faults", [])),
        "evidence": fault_evidence(result),
        "phases": _phases(avail),
        "charts": charts,
        "banks": bank_breakdown(payments, windows_active, slo_ms, touched),
        "links": link_breakdown(
            payments, windows_active, slo_ms, touched, [b["code"] for b in system.get("banks", [])], ledgers
        ),
        "service_faults": service_faults(result.get("faults", [])),
        "examples": anomaly_examples(result, payments),
        "windows": settlement_windows(ledgers),
        "rules": REGRESSION_RULES,
        "generated_at": time.time(),
    }


def run_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The handful of numbers that matter, as shown in the banner and compared on the suite page."""
    # A section is null when the check measuring it could not run (verdict unknown): its figures are None.
    avail = result.get("availability") or {}
    overall = avail.get("overall") or {}
    cons = result.get("consistency") or {}
    rec = cons.get("reconciliation") or {}
    view = cons.get("customer_view") or {}
    p99s = [p["p99_ms"] for p in avail.get("phases", {}).values() if p.get("p99_ms") is not None]
    breaks = reconciliation_breaks(cons.get("reconciliation"))
    return {
        "scenario": result["scenario"]["name"],
        "backend": result["scenario"].get("backend", "local"),
        "verdict": result["verdict"],
        "expects_anomalies": bool(result["scenario"].get("expects_anomalies", False)),
        "availability": overall.get("success_ratio"),
        # Which load produced it: an open model's figure is against demand, a closed model's
        # undercounts outages; results from before the open model were closed-loop.
        "load_model": (avail.get("load") or {}).get("describe") or ("closed model" if avail else None),
        "operations": overall.get("operations", 0),
        "good": overall.get("good"),
        "worst_p99_ms": max(p99s) if p99s else None,
        "anomalies": rec.get("anomaly_count"),
        "books_failing": [b["name"] for b in rec.get("books", []) if not b["ok"]],
        # The one count of reconciliation breaks (payments + books invariants): harness.result.Breaks.
        "breaks": breaks.total if breaks else None,
        "breaks_detail": breaks.detail() if breaks else None,
        "shown_verdict": shown_verdict(result["verdict"], bool(result["scenario"].get("expects_anomalies", False))),
        "lost_acknowledged": view.get("lost_acknowledged"),
        "time_to_recover_s": avail.get("time_to_recover_s"),
        "time_to_recover_resolution_s": (avail.get("resolution_s") or {}).get("time_to_recover_s"),
        "time_to_consistency_s": cons.get("time_to_consistency_s"),
        "anomaly_opened": cons.get("anomaly_opened"),
        "time_to_consistency_resolution_s": cons.get("time_to_consistency_resolution_s"),
        "started_at": avail.get("start"),
        "failures": list(result.get("failures", [])),
    }


# Scorecard rows: `status` is met | missed | expected (anomalies caught, as a naive-component
# scenario expects) | unknown (the check could not run) for a row a check judges (`check` names it),
# and context for a figure no check judges (availability tiers, settlement, objectives not set).
JUDGED = ("met", "missed", "expected", "unknown")


def scorecard(
    result: Mapping[str, Any], scenario: Mapping[str, Any], ledgers: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Rows in the terms overseers use: recovery time and point, availability, bulkhead, breaks, time
    to consistency, each shown with the verdict of the check that judged it (result.json's `checks`,
    the verdicts the banner is made of); then context rows no check judges (tiers, settlement)."""
    s = run_summary(result)
    expect = scenario.get("expect") or {}
    ae, ce = expect.get("availability") or {}, expect.get("consistency") or {}
    checks: Mapping[str, Mapping[str, Any]] = result.get("checks") or {}
    judged: list[dict[str, Any]] = []
    context: list[dict[str, Any]] = []
    if not checks:  # a result from before per-check verdicts: one verdict for all of them
        status = {"pass": "met", "fail": "missed"}.get(result["verdict"], "unknown")
        judged.append(
            _row(
                "Every check",
                "a result from before per-check verdicts",
                "; ".join(result.get("failures", [])) or "all held",
                status,
                "all",
            )
        )
    rows_of = {
        "availability": _availability_rows,
        "bulkhead": _bulkhead_rows,
        "consistency": _breaks_rows,
        "time_to_consistency": _ttc_rows,
        "customer_view": _recovery_point_rows,
    }
    for name, verdict in checks.items():
        rows = rows_of.get(name, _generic_rows)(name, verdict, result, s, ae, ce)
        judged += _agree(name, verdict, [r for r in rows if r["check"]])
        context += [r for r in rows if not r["check"]]
    ratio = s["availability"]
    for tier in AVAILABILITY_TIERS:
        reached = ratio is not None and ratio >= tier
        context.append(
            _row(
                f"Availability tier {fmt_pct(tier)}",
                f"{'reached' if reached else 'not reached'} over this run's {fmt_num(s['operations'])} payments",
                fmt_pct(ratio, 3),
            )
        )
    if ledgers is not None and "windows" in ledgers["switch"]:  # a target without settlement has none
        windows = ledgers["switch"]["windows"]
        with_transfers = [w for w in windows if w.get("transfer_count", 1)]
        unsettled = [w for w in with_transfers if w["state"] != "SETTLED"]
        context.append(
            _row(
                "Settlement completed",
                "windows with transfers that settled",
                f"{len(with_transfers) - len(unsettled)} of {len(with_transfers)} windows",
            )
        )
    return judged + context


def banner_verdict(rows: Sequence[Mapping[str, Any]], expects_anomalies: bool) -> str:
    """The banner's verdict, made of the scorecard's judged rows (pass | expected | fail | unknown):
    a missed row fails it, a row whose check could not run makes it unknown."""
    statuses = {r["status"] for r in rows if r["check"]}
    verdict = "fail" if "missed" in statuses else "unknown" if "unknown" in statuses else "pass"
    return shown_verdict(verdict, expects_anomalies)


def _row(name: str, objective: str, measured: str, status: str = "context", check: str | None = None) -> dict[str, Any]:
    return {"name": name, "objective": objective, "measured": measured, "status": status, "check": check}


def _status(ok: bool) -> str:
    return "met" if ok else "missed"


def _agree(name: str, verdict: Mapping[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A check's rows say what its verdict says: all unknown when it could not run, and at least one
    missed row when it is invalid (its failure lines, when no row of its own shows the miss)."""
    if verdict["verdict"] == "unknown":
        error = verdict.get("error") or "; ".join(verdict.get("failures", []))
        shown = rows or [_row(name.replace("_", " ").capitalize(), "", "", "unknown", name)]
        return [{**r, "measured": f"could not run: {error}", "status": "unknown"} for r in shown]
    if verdict["verdict"] == "invalid" and not any(r["status"] == "missed" for r in rows):
        rows.append(
            _row(
                name.replace("_", " ").capitalize(),
                "its expectations",
                "; ".join(verdict.get("failures", [])),
                "missed",
                name,
            )
        )
    return rows


def _availability_rows(
    name: str,
    verdict: Mapping[str, Any],
    result: Mapping[str, Any],
    s: Mapping[str, Any],
    ae: Mapping[str, Any],
    ce: Mapping[str, Any],
) -> list[dict[str, Any]]:
    avail = result.get("availability") or {}
    rows: list[dict[str, Any]] = []
    if avail and not avail.get("faults"):
        rows.append(_row("Recovery time", "no fault in this run", NA))
    for v in avail.get("verdicts", []):
        kind, _, phase = v["name"].partition(".")
        if kind == "time_to_recover_s":
            objective = (
                f"objective {fmt_duration(v['target'])} (PFMI Principle 17 ceiling for critical systems: 2 h)"
                if v["target"] is not None
                else "recover before the run ends (no objective set; PFMI Principle 17 ceiling: 2 h)"
            )
            measured = fmt_ttr(s) if v["measured"] is not None else "did not recover"
            rows.append(_row("Recovery time", objective, measured, _status(v["ok"]), name))
        elif kind == "success_ratio":
            if not _is_target(v):
                continue
            where = "whole run" if phase == "overall" else f"{phase} phase"
            rows.append(
                _row(
                    f"Availability, {where}",
                    f"at least {fmt_pct(v['target'])}",
                    fmt_pct(v["measured"], 3),
                    _status(v["ok"]),
                    name,
                )
            )
        elif kind == "p99_ms":
            rows.append(
                _row(
                    f"p99 latency, {phase} phase",
                    f"at most {fmt_ms(v['target'])}",
                    fmt_ms(v["measured"]),
                    _status(v["ok"]),
                    name,
                )
            )
        else:
            rows.append(
                _row(v["name"].replace("_", " "), f"target {v['target']}", str(v["measured"]), _status(v["ok"]), name)
            )
    return rows


def _is_target(v: Mapping[str, Any]) -> bool:
    """A success-ratio floor of 0 cannot be missed: results written before null expectations stopped
    making verdicts encoded "no target" that way, and it is shown as no target."""
    return not (v["name"].startswith("success_ratio.") and not v["target"])


def _bulkhead_rows(
    name: str,
    verdict: Mapping[str, Any],
    result: Mapping[str, Any],
    s: Mapping[str, Any],
    ae: Mapping[str, Any],
    ce: Mapping[str, Any],
) -> list[dict[str, Any]]:
    target, ratio = ae.get("unaffected_banks_success_ratio"), result.get("bulkhead_success_ratio")
    what = "payments between banks no fault touched, during faults"
    if target is not None or verdict["verdict"] != "valid":
        measured = fmt_pct(ratio, 3) if ratio is not None else "no such payment"
        objective = f"{what}: at least {fmt_pct(target)}" if target is not None else what
        return [_row("Bulkhead", objective, measured, _status(verdict["verdict"] == "valid"), name)]
    if ratio is not None:
        return [_row("Bulkhead", f"{what} (no target set)", fmt_pct(ratio, 3))]
    return []


def _breaks_rows(
    name: str,
    verdict: Mapping[str, Any],
    result: Mapping[str, Any],
    s: Mapping[str, Any],
    ae: Mapping[str, Any],
    ce: Mapping[str, Any],
) -> list[dict[str, Any]]:
    breaks = s["breaks"]
    measured = NA if breaks is None else f"{fmt_num(breaks)} ({s['breaks_detail']})" if breaks else "0"
    if ce.get("verdict") == "anomalies_detected":
        objective = "some, caught: this scenario runs naive components on purpose"
        status = "expected" if verdict["verdict"] == "valid" else "missed"
    else:
        objective = "none (anomalous payments and books invariants)"
        status = _status(verdict["verdict"] == "valid")
    return [_row("Reconciliation breaks left open", objective, measured, status, name)]


def _recovery_point_rows(
    name: str,
    verdict: Mapping[str, Any],
    result: Mapping[str, Any],
    s: Mapping[str, Any],
    ae: Mapping[str, Any],
    ce: Mapping[str, Any],
) -> list[dict[str, Any]]:
    lost = s["lost_acknowledged"]
    if ce.get("verdict", "consistent") == "consistent" and ce.get("no_acknowledged_payment_lost", True):
        return [
            _row(
                "Recovery point",
                "acknowledged payments lost: must be 0",
                fmt_num(lost),
                _status(verdict["verdict"] == "valid"),
                name,
            )
        ]
    why = "naive components expected to lose money" if ce.get("verdict") == "anomalies_detected" else "not required"
    return [_row("Recovery point", f"acknowledged payments lost (not judged: {why})", fmt_num(lost))]


def _ttc_rows(
    name: str,
    verdict: Mapping[str, Any],
    result: Mapping[str, Any],
    s: Mapping[str, Any],
    ae: Mapping[str, Any],
    ce: Mapping[str, Any],
) -> list[dict[str, Any]]:
    objective = ce.get("max_time_to_consistency_s")
    ttc = s["time_to_consistency_s"]
    measured = fmt_ttc(s) if ttc is not None or s.get("anomaly_opened") is False else "never consistent"
    if ce.get("verdict", "consistent") == "consistent" and objective is not None:
        return [
            _row(
                "Time to consistency",
                f"objective {fmt_duration(objective)}",
                measured,
                _status(verdict["verdict"] == "valid"),
                name,
            )
        ]
    why = "no objective set" if objective is None else "not judged: anomalies expected"
    return [_row("Time to consistency", why, measured)]


def _generic_rows(
    name: str,
    verdict: Mapping[str, Any],
    result: Mapping[str, Any],
    s: Mapping[str, Any],
    ae: Mapping[str, Any],
    ce: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """A check this page has no words of its own for: its verdict and failure lines."""
    failures = "; ".join(verdict.get("failures", [])) or "held"
    return [
        _row(
            name.replace("_", " ").capitalize(),
            "its expectations",
            failures,
            _status(verdict["verdict"] == "valid"),
            name,
        )
    ]


def fault_schedule(scenario: Mapping[str, Any], measured: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The scenario's schedule beside what really happened (apply and heal as recorded)."""
    seen: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for f in measured:
        seen[f["fault"]].append(f)
    rows = []
    for i, f in enumerate(scenario.get("faults") or []):
        name = f.get("name") or f"{f['kind']}-{i + 1}"
        targets = f.get("targets")
        rows.append(
            {
                "name": name,
                "kind": f["kind"],
                "targets": ", ".join(targets) if isinstance(targets, list) else str(targets),
                "start": f.get("start", 0),
                "duration": f.get("duration"),
                "attributes": ", ".join(f"{k}={v}" for k, v in {**(f.get("attributes") or {}), **_extras(f)}.items()),
                "applied": [(m["apply"], m.get("heal")) for m in seen.get(name, [])],
                "detect": [m.get("time_to_detect_s") for m in seen.get(name, [])],
            }
        )
    return rows


def fault_evidence(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """What each fault window did, as the evidence checker decided (None: a result from before it,
    or the check could not run); each link's counters flattened into a row for the table."""
    ev = result.get("evidence")
    if not ev:
        return None
    windows = []
    for w in ev.get("windows", []):
        proxies = w.get("proxies") or {}
        links = [
            {
                "name": name,
                "up": d.get("upstream") or {},
                "down": d.get("downstream") or {},
                "undelivered": sum(max(0, x.get("undelivered", 0)) for x in d.values()),
            }
            for name, d in (proxies.get("links") or {}).items()
        ]
        windows.append({**w, "link_rows": links, "proxy_note": proxies.get("note")})
    return {"windows": windows, "no_effect": ev.get("no_effect", []), "counters": ev.get("counters")}


def fmt_bytes(n: int | None) -> str:
    """Bytes for people: 812 B, 12.6 KiB, 3.4 MiB."""
    if n is None:
        return NA
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024 or unit == "MiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"  # unreachable: the loop returns at MiB


def _extras(f: Mapping[str, Any]) -> dict[str, Any]:
    return {k: f[k] for k in ("stream", "toxicity", "restart_after", "every", "repeat") if f.get(k) is not None}


def _phases(avail: Mapping[str, Any]) -> list[dict[str, Any]]:
    targets: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for v in avail.get("verdicts", []):
        if _is_target(v):
            targets[v["name"].rsplit(".", 1)[-1]].append(v)
    return [
        {"name": name, **stats, "verdicts": targets.get(name, [])}
        for name, stats in avail.get("phases", {}).items()
        if stats.get("operations")
    ]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- charts ---------------------------------------------------------------------------------------


def chart_data(avail: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], start: float) -> dict[str, Any]:
    """Series for the stacked charts on one time axis (seconds since the first payment)."""
    slo = avail.get("slo") or {}
    per_second = list(avail.get("per_second", []))
    end_rel = (avail.get("end") or start) - start
    if per_second and end_rel - per_second[-1]["t"] < 1:
        per_second.pop()  # the last, partial second would read as a throughput collapse
    step = max(1, math.ceil(len(per_second) / MAX_POINTS))
    buckets = [per_second[i : i + step] for i in range(0, len(per_second), step)]
    reasons = Counter[str]()
    for b in per_second:
        reasons.update(b.get("errors") or {})
    top = [r for r, _ in reasons.most_common(8)]
    t, thr, thr_min, ok, p50, p95, p99 = [], [], [], [], [], [], []
    errs: dict[str, list[int]] = {r: [] for r in top}
    other: list[int] = []
    for b in buckets:
        t.append(b[0]["t"])
        count = sum(x["count"] for x in b)
        thr.append(round(count / len(b), 2))
        thr_min.append(min(x["count"] for x in b))  # the slowest second: a crash's zero is not averaged away
        # Worst second of the bucket, as for latency: a one-second outage stays visible at any length.
        ratios = [x["good"] / x["count"] for x in b if x["count"]]
        ok.append(round(min(ratios) * 100, 3) if ratios else None)
        # Worst second of the bucket: merging must not hide a latency spike.
        p50.append(_worst(b, "p50_ms"))
        p95.append(_worst(b, "p95_ms"))
        p99.append(_worst(b, "p99_ms"))
        merged = Counter[str]()
        for x in b:
            merged.update(x.get("errors") or {})
        for r in top:
            errs[r].append(merged.get(r, 0))
        other.append(sum(n for r, n in merged.items() if r not in errs))
    if any(other):
        errs["other"] = other
    at, opened = minmax_downsample(
        [round(s["at"] - start, 2) for s in samples], [s["open_anomalies"] for s in samples], MAX_POINTS
    )
    anomalies = {"t": at, "open": opened, "samples": len(samples)}
    faults = [
        {
            "name": f["fault"],
            "kind": f["kind"],
            "from": f["apply"],
            "to": f.get("heal"),
            "detect": f.get("time_to_detect_s"),
        }
        for f in avail.get("faults", [])
    ]
    recoveries = [{"heal": r["heal"], "recovered": r.get("recovered")} for r in avail.get("recoveries", [])]
    end = round((avail.get("end") or start) - start, 2)
    return {
        "step_s": step,
        "end": end,
        "t": t,
        "throughput": thr,
        "throughput_min": thr_min if step > 1 else None,
        "success_pct": ok,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "errors": errs,
        "anomalies": anomalies,
        "faults": faults,
        "recoveries": recoveries,
        "business": sorted(BUSINESS_REASONS),
        "slo_pct": round(float(slo["success_ratio"]) * 100, 3) if slo.get("success_ratio") else None,
        "latency_slo_ms": slo.get("latency_slo_ms"),
    }


def minmax_downsample(t: Sequence[float], v: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most `max_points` of a series (t ascending): cut into max_points // 2 runs of consecutive
    points, each keeps its lowest and its highest point in time order. The extremes of the whole
    series are always kept, and a spike or a dip of one point stays on the chart at any length."""
    n = len(t)
    if n <= max_points:
        return list(t), list(v)
    runs = max(1, max_points // 2)
    out_t: list[float] = []
    out_v: list[float] = []
    for k in range(runs):
        lo, hi = k * n // runs, (k + 1) * n // runs
        if lo >= hi:
            continue
        i_min = min(range(lo, hi), key=v.__getitem__)
        i_max = max(range(lo, hi), key=v.__getitem__)
        for i in sorted({i_min, i_max}):
            out_t.append(t[i])
            out_v.append(v[i])
    return out_t, out_v


def _worst(bucket: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [x[key] for x in bucket if x.get(key) is not None]
    return max(values) if values else None


# -- per-bank and per-link breakdown --------------------------------------------------------------


@dataclass
class _Tally:
    ops: int = 0
    good: int = 0
    fault_ops: int = 0
    fault_good: int = 0

    def add(self, good: bool, during_fault: bool) -> None:
        self.ops += 1
        self.good += good
        if during_fault:
            self.fault_ops += 1
            self.fault_good += good

    def row(self, name: str, touched: bool) -> dict[str, Any]:
        calm_ops, calm_good = self.ops - self.fault_ops, self.good - self.fault_good
        return {
            "name": name,
            "touched": touched,
            "ops": self.ops,
            "ratio": self.good / self.ops if self.ops else None,
            "fault_ops": self.fault_ops,
            "fault_ratio": self.fault_good / self.fault_ops if self.fault_ops else None,
            "calm_ratio": calm_good / calm_ops if calm_ops else None,
        }


def _touched(faults: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """Banks a fault was aimed at ('switch' stands for the switch process), and the links one held:
    a fault on links names them in its (expanded) targets; a disconnect done with Toxiproxy lists
    them in `links`; a fault on a process (crash, pause ...) targets no link."""
    banks: set[str] = set()
    links: set[str] = set()
    for f in faults:
        links.update(f.get("links") or [])
        for target in f.get("targets", []):
            if "->" in target:
                links.add(target)
                banks.update(p for p in target.split("->") if p not in ("customers", "switch"))
            else:
                banks.add(target)
    return banks, links


def service_faults(faults: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Applied faults that targeted a process rather than a link (named under the per-link table)."""
    seen: dict[str, dict[str, Any]] = {}
    for f in faults:
        if f.get("event") == "apply" and not any("->" in t for t in f.get("targets", [])) and not f.get("links"):
            seen.setdefault(f["fault"], {"name": f["fault"], "kind": f["kind"], "targets": list(f["targets"])})
    return list(seen.values())


class _During:
    """Whether an operation completed inside one of the periods (ends included): a binary search
    over the periods merged, so a long run with a fault a minute costs log(faults) per operation."""

    def __init__(self, periods: Sequence[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for a, b in sorted(periods):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    def __call__(self, op: Mapping[str, Any]) -> bool:
        t = op["complete"]
        k = bisect_right(self.starts, t) - 1
        return k >= 0 and t <= self.ends[k]


def bank_breakdown(
    payments: Sequence[Mapping[str, Any]],
    periods: Sequence[tuple[float, float]],
    slo_ms: float,
    touched: tuple[set[str], set[str]],
) -> list[dict[str, Any]]:
    """Success ratio by payer and by payee bank, during faults and outside them."""
    payer: dict[str, _Tally] = defaultdict(_Tally)
    payee: dict[str, _Tally] = defaultdict(_Tally)
    during_fault = _During(periods)
    for op in payments:
        good, during = is_available(op, slo_ms), during_fault(op)
        if op.get("payer"):
            payer[op["payer"]].add(good, during)
        if op.get("payee"):
            payee[op["payee"]].add(good, during)
    banks, _ = touched
    rows = []
    for code in sorted(set(payer) | set(payee)):
        rows.append(
            {
                "bank": code,
                "touched": code in banks or "switch" in banks,
                "as_payer": payer[code].row(code, code in banks),
                "as_payee": payee[code].row(code, code in banks),
            }
        )
    return rows


def link_breakdown(
    payments: Sequence[Mapping[str, Any]],
    periods: Sequence[tuple[float, float]],
    slo_ms: float,
    touched: tuple[set[str], set[str]],
    banks: Sequence[str] = (),
    ledgers: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Success ratio of the payments that crossed each link of the topology (harness.links), each
    link counted on its own: a payment crosses `customers->PAYER`, then `PAYER->switch` unless the
    payer bank decided it alone, then `switch->PAYEE` unless the switch did (`crossed`). The fault
    marker sits on the links a fault held, not on every link of a bank it touched."""
    reach = crossed(ledgers)
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    during_fault = _During(periods)
    for op in payments:
        payer, payee = op.get("payer"), op.get("payee")
        if not payer or not payee:
            continue
        good, during = is_available(op, slo_ms), during_fault(op)
        for link in payment_route(payer, payee)[: reach(op)]:
            tallies[link].add(good, during)
    _, held = touched
    names = link_names(banks) or sorted(tallies, key=lambda name: (name.split("->")[0] != "customers", name))
    by_kind = sorted(names, key=lambda name: (_LINK_ORDER.index(_link_kind(name)), name))
    return [tallies[link].row(link, link in held) for link in by_kind + sorted(set(tallies) - set(names))]


_LINK_ORDER = ("customers", "to-switch", "from-switch")


def _link_kind(name: str) -> str:
    caller, callee = endpoints(name)
    return "customers" if caller == "customers" else "to-switch" if callee == "switch" else "from-switch"


def crossed(ledgers: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], int]:
    """How many links of its route (harness.links.payment_route) a payment crossed, from the ledgers:
    1 when the payer bank decided it alone (a business reject such as AM04 the switch never saw, or
    the customer never reached the bank), 2 when the switch did (AM23, DUPL ...), else 3: the payee
    bank has it, or the switch sent it on (and a timeout, an offline payee or a lost request count
    as crossing: the link was tried). Without ledgers, every payment crosses its whole route."""
    if ledgers is None:
        return lambda op: 3
    # Tombstones (fingerprint null) are answers to status queries, not payments (as in reconcile).
    transfers = {t["payment_id"]: t for t in ledgers["switch"]["transfers"] if t.get("fingerprint") is not None}
    banks = ledgers["banks"].values()
    sent = {p["payment_id"]: p for b in banks for p in b["payments"] if p.get("fingerprint") is not None}
    credited = {c["payment_id"] for b in banks for c in b["credits"] if c.get("fingerprint") is not None}

    def decided_alone(row: Mapping[str, Any]) -> bool:
        return row["status"] == "RJCT" and row.get("reason") in BUSINESS_REASONS

    def reach(op: Mapping[str, Any]) -> int:
        pid = op["id"]
        transfer = transfers.get(pid)
        if pid in credited or (transfer is not None and not decided_alone(transfer)):
            return 3
        if transfer is not None:
            return 2
        payment = sent.get(pid)
        return 2 if payment is not None and not decided_alone(payment) else 1

    return reach


# -- consistency examples -------------------------------------------------------------------------


def anomaly_examples(result: Mapping[str, Any], payments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Example payment ids per anomaly class, with the three-way states and what the customer was told."""
    rec = result["consistency"]["reconciliation"] or {}  # null: the check could not run
    view = result["consistency"]["customer_view"] or {}
    wanted: dict[str, list[Mapping[str, Any]]] = {
        cls: list(examples)[:EXAMPLES_PER_CLASS] for cls, examples in (rec.get("examples") or {}).items()
    }
    for cls in ("lost_acknowledged", "misinformed_failure"):
        ids = (view.get("examples") or {}).get(cls) or []
        if ids:
            wanted[cls] = [{"payment_id": pid} for pid in ids[:EXAMPLES_PER_CLASS]]
    ids = {e["payment_id"] for examples in wanted.values() for e in examples}
    told: dict[str, str] = {}
    seen: dict[str, Mapping[str, Any]] = {}
    for op in payments:  # the last answer a customer got is what they believe
        if op.get("id") in ids:
            seen[op["id"]] = op
            told[op["id"]] = op.get("status") or op.get("outcome") or "?"
            if op.get("reason"):
                told[op["id"]] += f" {op['reason']}"
            elif op.get("error"):
                told[op["id"]] += f" ({op['error']})"
    three_way = {e["payment_id"]: e for examples in (rec.get("examples") or {}).values() for e in examples}

    def row(e: Mapping[str, Any]) -> dict[str, Any]:
        pid = e["payment_id"]
        known = {**three_way.get(pid, {}), **e}
        op = seen.get(pid, {})
        return {
            "payment_id": pid,
            "payer_bank": known.get("payer_bank") or op.get("payer"),
            "payee_bank": known.get("payee_bank") or op.get("payee"),
            "amount": known.get("amount") if known.get("amount") is not None else op.get("amount"),
            "payer": known.get("payer"),
            "switch": known.get("switch"),
            "payee": known.get("payee"),
            "customer": told.get(pid, "never answered"),
        }

    return [
        {
            "class": cls,
            "count": (rec.get("anomalies") or {}).get(cls, view.get(cls)),
            "rows": [row(e) for e in examples],
        }
        for cls, examples in wanted.items()
        if examples
    ]


def settlement_windows(ledgers: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if ledgers is None:
        return []
    return sorted(ledgers["switch"].get("windows", []), key=lambda w: w["window_id"])


# -- the suite page -------------------------------------------------------------------------------


def write_index(reports_dir: Path, runs_dir: Path | None = None) -> Path:
    """Render `reports/index.html`: the latest run of every scenario, compared with its baseline run
    (see `harness baseline`) or else with its previous run, regressions flagged."""
    runs_dir = runs_dir or reports_dir / "runs"
    model = index_model(reports_dir, runs_dir)
    html = _env().get_template("index.html.j2").render(**model)
    out = reports_dir / INDEX_FILE
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out


def index_model(reports_dir: Path, runs_dir: Path) -> dict[str, Any]:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result_path in sorted(runs_dir.glob("*/result.json")):
        try:
            summary = run_summary(read_result(result_path).as_json())
        except (RunDirError, KeyError) as exc:  # a half-written or foreign run must not hide the others
            by_scenario["(unreadable)"].append({"run": result_path.parent.name, "error": repr(exc)})
            continue
        summary["run"] = result_path.parent.name
        summary["fingerprint"] = scenario_fingerprint(result_path.parent)
        summary["label"] = _run_label(result_path.parent.name, summary["scenario"])
        summary["link"] = _relative(RunDir(result_path.parent).report, reports_dir)
        summary["has_report"] = (RunDir(result_path.parent).report).exists()
        by_scenario[summary["scenario"]].append(summary)
    baselines = load_baselines(reports_dir)
    rows: list[dict[str, Any]] = []
    for name in sorted(by_scenario):
        runs = sorted(by_scenario[name], key=lambda s: s.get("started_at") or 0)
        latest = runs[-1]
        if "error" in latest:
            rows.append(
                {"scenario": name, "latest": latest, "reference": None, "kind": None, "flags": [], "runs": runs}
            )
            continue
        reference, kind = None, None
        if name in baselines:
            reference, kind = baselines[name], "baseline"
        elif len(runs) > 1:
            reference, kind = runs[-2], "previous"
        comparable = reference is not None and latest.get("fingerprint") == reference.get("fingerprint")
        rows.append(
            {
                "scenario": name,
                "latest": latest,
                "reference": reference,
                "kind": kind,
                "comparable": comparable,
                "flags": regressions(latest, reference) if reference and comparable else [],
                "runs": list(reversed(runs[-6:-1])),
            }
        )
    return {
        "rows": rows,
        "rules": REGRESSION_RULES,
        "generated_at": time.time(),
        "passed": sum(1 for r in rows if r["latest"].get("verdict") == "pass"),  # caught as expected is a pass
        "regressed": sum(1 for r in rows if r["flags"]),
    }


def regressions(latest: Mapping[str, Any], ref: Mapping[str, Any]) -> list[str]:
    flags = []
    a, b = latest.get("availability"), ref.get("availability")
    if a is not None and b is not None and a < b - 0.001 and _significant_drop(latest, ref):
        flags.append(f"availability down: {fmt_pct(a, 3)} vs {fmt_pct(b, 3)}")
    x_breaks, y_breaks = _breaks_of(latest), _breaks_of(ref)
    if _more(x_breaks, y_breaks) and not latest.get("expects_anomalies"):
        flags.append(f"reconciliation breaks up: {x_breaks:,} vs {y_breaks:,}")
    if _more(latest["lost_acknowledged"], ref["lost_acknowledged"]):
        flags.append(f"lost acknowledged payments up: {latest['lost_acknowledged']:,} vs {ref['lost_acknowledged']:,}")
    for key, label, floor in (("time_to_recover_s", "recovery", 2.0), ("time_to_consistency_s", "consistency", 2.5)):
        x, y = latest.get(key), ref.get(key)
        if y is not None and (x is None or (x > y * 1.5 and x - y > floor)):
            flags.append(f"{label} slower: {fmt_duration(x)} vs {fmt_duration(y)}")
    x, y = latest.get("worst_p99_ms"), ref.get("worst_p99_ms")
    if x is not None and y is not None and x > y * 1.5 and x - y > 250:
        flags.append(f"worst p99 up: {fmt_ms(x)} vs {fmt_ms(y)}")
    if latest["verdict"] != "pass" and ref["verdict"] == "pass":
        flags.append(f"verdict: pass -> {latest['verdict']}")
    return flags


def _breaks_of(summary: Mapping[str, Any]) -> int | None:
    """A run summary's reconciliation breaks; a baseline saved before `breaks` was kept has its parts."""
    if "breaks" in summary:
        return summary["breaks"]  # type: ignore[no-any-return]
    if summary.get("anomalies") is None:
        return None
    return Breaks(summary["anomalies"], tuple(summary.get("books_failing", []))).total


def _more(x: int | None, y: int | None) -> bool:
    """x > y, when both were counted (a count is None when its check could not run)."""
    return x is not None and y is not None and x > y


def _significant_drop(latest: Mapping[str, Any], ref: Mapping[str, Any], z_min: float = 3.0) -> bool:
    """Two-proportion z-test on good/total: is the lower success ratio more than run-to-run noise?"""
    n1, n2 = latest.get("operations") or 0, ref.get("operations") or 0
    g1, g2 = latest.get("good"), ref.get("good")
    if not n1 or not n2 or g1 is None or g2 is None:
        return True  # without counts, fall back to the plain threshold
    pooled = (g1 + g2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return se == 0 or (g2 / n2 - g1 / n1) / se > z_min


def scenario_fingerprint(run_dir: Path) -> str | None:
    """Runs are comparable only when they ran the same scenario (a random-chaos run draws a new one)."""
    path = RunDir(run_dir).scenario
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def _run_label(run: str, scenario: str) -> str:
    """'bank-cut-20261123-133717-537' -> '2026-11-23 13:37:17': the scenario is already on the row."""
    stamp = run.removeprefix(f"{scenario}-")
    parts = stamp.split("-")
    if len(parts) >= 2 and len(parts[0]) == 8 and len(parts[1]) == 6 and (parts[0] + parts[1]).isdigit():
        d, t = parts[0], parts[1]
        return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]}:{t[4:]}"
    return run


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return path.resolve().as_uri()


def load_baselines(reports_dir: Path) -> dict[str, dict[str, Any]]:
    path = reports_dir / BASELINES_FILE
    if not path.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    for summary in data.values():  # saved before breaks were counted: counted now, the same way
        summary.setdefault("breaks", _breaks_of(summary))
    return data


def set_baseline(run_dir: Path, reports_dir: Path) -> dict[str, Any]:
    """Name a run as its scenario's baseline. Its figures are copied, so the comparison survives
    the run directory being cleaned away."""
    summary = run_summary(read_result(run_dir).as_json())
    summary["run"] = run_dir.name
    summary["fingerprint"] = scenario_fingerprint(run_dir)
    summary["label"] = _run_label(run_dir.name, summary["scenario"])
    summary["link"] = _relative(RunDir(run_dir).report, reports_dir)
    summary["has_report"] = (RunDir(run_dir).report).exists()
    baselines = load_baselines(reports_dir)
    baselines[summary["scenario"]] = summary
    path = reports_dir / BASELINES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baselines, indent=2, sort_keys=True))
    tmp.replace(path)
    return summary
