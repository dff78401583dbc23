"""What the review pages list, read from what the pipeline recorded: cycles, drift over time, pending approvals, reports.

Every lookup starts from a cycle id recorded in MLflow, never from a path a caller
supplies: a report is served only if it is one of the known report files of a
recorded cycle and resolves, with no symlink on the way, inside the storage root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from pipeline import registry
from pipeline.config import Config
from pipeline.storage import is_remote

REPORTS = ("drift.html", "validation.html")
KINDS: tuple[registry.CycleKind, ...] = ("retrain", "monitor")


class NotRecorded(LookupError):
    """No such cycle or report: the caller gets a 404, whatever it asked for."""


@dataclass(frozen=True)
class CycleSummary:
    cycle_id: str
    kind: str
    as_of: date
    started: datetime
    status: str
    trigger: str
    mlflow_run_id: str
    validation: str | None = None
    dataset_drift: bool | None = None
    drift_share: float | None = None
    drifted_features: list[str] = field(default_factory=list)
    drift_scores: dict[str, float] = field(default_factory=dict)
    gate: str | None = None
    airflow_dag_id: str | None = None
    airflow_run_id: str | None = None


def _summary(run, kind: str) -> CycleSummary:
    tags, metrics = run.data.tags, run.data.metrics
    drift = tags.get("drift.verdict")
    return CycleSummary(
        cycle_id=tags["cycle_id"], kind=kind, as_of=date.fromisoformat(tags["as_of"]),
        started=datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc),
        status=tags.get("cycle.status", "running"), trigger=tags.get("trigger", "cli"), mlflow_run_id=run.info.run_id,
        validation=tags.get("validation.verdict"), dataset_drift=None if drift is None else drift == "drift",
        drift_share=metrics.get("drift.share"),
        drifted_features=[f for f in tags.get("drift.drifted_features", "").split(",") if f],
        drift_scores={k.removeprefix("drift.score."): v for k, v in metrics.items() if k.startswith("drift.score.")},
        gate=tags.get("gate.verdict"), airflow_dag_id=tags.get("airflow.dag_id"), airflow_run_id=tags.get("airflow.run_id"),
    )


def cycles(config: Config, kinds: tuple[registry.CycleKind, ...] = KINDS, limit: int = 200) -> list[CycleSummary]:
    """Recorded cycles, newest first."""
    mlflow_client = registry.client(config)
    found = []
    for kind in kinds:
        runs = mlflow_client.search_runs(
            [registry.experiment_id(config, kind)], "tags.cycle_id != ''", max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
        found += [_summary(run, kind) for run in runs]
    return sorted(found, key=lambda c: c.started, reverse=True)[:limit]


def cycle(config: Config, cycle_id: str) -> CycleSummary:
    for summary in cycles(config):
        if summary.cycle_id == cycle_id:
            return summary
    raise NotRecorded(cycle_id)


def drift_history(summaries: list[CycleSummary]) -> dict[str, list[tuple[CycleSummary, float]]]:
    """Each feature's drift score across the cycles that measured drift, oldest first."""
    history: dict[str, list[tuple[CycleSummary, float]]] = {}
    for summary in sorted(summaries, key=lambda c: (c.as_of, c.started)):
        for feature, score in summary.drift_scores.items():
            history.setdefault(feature, []).append((summary, score))
    return history


def pending_approvals(config: Config) -> list[CycleSummary]:
    """Retraining cycles whose registered version is still the challenger: nobody has decided on it yet.

    The cycle's own status is not enough: a person may decide outside Airflow (`pipeline promote`
    or `reject`), and a newer cycle's challenger supersedes an older one.
    """
    challenger = registry.aliases(config).get(registry.CHALLENGER)
    if challenger is None:
        return []
    waiting = registry.get_version(config, challenger).tags.get("cycle_id")
    return [c for c in cycles(config, kinds=("retrain",)) if c.status == "awaiting_approval" and c.cycle_id == waiting]


def _cycle_file(config: Config, cycle_id: str, name: str) -> Path:
    if is_remote(config.storage.root):
        raise NotRecorded(name)
    recorded = cycle(config, cycle_id)
    path = Path(config.storage.root).resolve() / config.model_name / recorded.cycle_id / name
    # Resolving follows symlinks and "..": anything that does not stay exactly where it should is refused.
    if not path.is_file() or path.resolve() != path:
        raise NotRecorded(f"{cycle_id}/{name}")
    return path


def report_file(config: Config, cycle_id: str, name: str) -> Path:
    """A recorded cycle's report, as a local file inside the storage root; NotRecorded for anything else."""
    if name not in REPORTS:
        raise NotRecorded(name)
    return _cycle_file(config, cycle_id, name)


def validation(config: Config, cycle_id: str):
    """The cycle's validation result, and whether it kept the failing batch."""
    from pipeline.validate import ValidationResult

    result = ValidationResult.from_dict(json.loads(_cycle_file(config, cycle_id, "validation.json").read_text()))
    try:
        kept = _cycle_file(config, cycle_id, "failed_batch.parquet")
    except NotRecorded:
        kept = None
    return result, kept


def gate_verdict(config: Config, cycle_id: str):
    from pipeline.gate import GateVerdict

    return GateVerdict.from_dict(json.loads(_cycle_file(config, cycle_id, "gate.json").read_text()))
