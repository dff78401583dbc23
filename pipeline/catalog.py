"""What the review pages list, read from what the pipeline recorded: cycles, drift and quality over time, pending
approvals, reports.

Every lookup starts from a cycle id recorded in MLflow, never from a path a caller
supplies: a report is served only if it is one of the known report files of a
recorded cycle and resolves, with no symlink on the way, inside the storage root.
Lists come from the cycle index, which copies MLflow's cycles in once (``pipeline.cycle_index``);
nothing else here writes, and a store that no cycle has used yet lists nothing and gets no tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pipeline import cycle_index, registry
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.record import (
    EARLIER_VERSIONS,
    EVALUATION,
    EVIDENCE,
    FAILED_BATCH,
    GATE,
    REPORTS,
    SEARCH,
    VALIDATION,
    JsonFile,
    RunSummary,
    Status,
    find_run,
)
from pipeline.results import EarlierVersions, EvaluationResult, Evidence, GateVerdict, SearchSummary, ValidationResult
from pipeline.storage import is_remote

KINDS: tuple[registry.CycleKind, ...] = ("retrain", "monitor")
T = TypeVar("T")


class NotRecorded(LookupError):
    """No such cycle or report: the caller gets a 404, whatever it asked for."""


def _nothing_recorded(config: Config) -> bool:
    """No cycle ever ran on this store: reading it creates nothing (no index, no tables)."""
    return all(registry.find_experiment_id(config, kind) is None for kind in KINDS)


def cycle_page(config: Config, where: cycle_index.CycleFilter = cycle_index.CycleFilter(), number: int = 1,
               size: int = 50) -> cycle_index.CyclePage:
    """A page of the cycles that match ``where``, newest first, from the cycle index; nothing before any cycle ran."""
    if _nothing_recorded(config):
        return cycle_index.CyclePage([], number, size, 0)
    return cycle_index.page(config, where, number, size)


def cycle_summaries(config: Config, cycle_ids: list[str]) -> dict[str, RunSummary]:
    """Recorded cycles by id, from the cycle index (a version's lineage, a page's worth at a time)."""
    if not cycle_ids or _nothing_recorded(config):
        return {}
    return cycle_index.summaries(config, cycle_ids)


def cycle(config: Config, cycle_id: str) -> RunSummary:
    """One recorded cycle, however old: looked up by its id, not found in a list."""
    try:
        found = find_run(config, cycle_id, KINDS)
    except ConfigError:  # not even a possible cycle id
        raise NotRecorded(cycle_id) from None
    if found is None:
        raise NotRecorded(cycle_id)
    return RunSummary.of(*found)


def quality_trend(config: Config, version: str, limit: int = 5) -> list[RunSummary]:
    """The newest ``limit`` cycles, of either kind, that checked champion ``version``'s live quality; newest as-of first."""
    where = f"tags.`quality.champion_version` = '{version}'"
    found = [RunSummary.of(run, kind) for kind in KINDS
             for run in registry.find_runs(config, kind, where, max_results=limit)]
    return sorted(found, key=lambda c: (c.as_of, c.started), reverse=True)[:limit]


def pending_approvals(config: Config) -> list[RunSummary]:
    """Retraining cycles waiting for a decision, newest first (a decision anywhere moves a cycle's status)."""
    waiting = registry.find_runs(config, "retrain", f"tags.`cycle.status` = '{Status.AWAITING_APPROVAL.value}'",
                                 max_results=100)
    return [RunSummary.of(run, "retrain") for run in waiting]


def _cycle_file(config: Config, cycle_id: str, name: str) -> Path:
    if is_remote(config.storage.root):
        raise NotRecorded(name)
    recorded = cycle(config, cycle_id)
    path = Path(config.storage.root).resolve() / config.model_name / recorded.cycle_id / name
    # Resolving follows symlinks and "..": anything that does not stay exactly where it should is refused.
    if not path.is_file() or path.resolve() != path:
        raise NotRecorded(f"{cycle_id}/{name}")
    return path


def _read(config: Config, cycle_id: str, entry: JsonFile[T]) -> T:
    return entry.parse(json.loads(_cycle_file(config, cycle_id, entry.name).read_text(encoding="utf-8")))


def report_file(config: Config, cycle_id: str, name: str) -> Path:
    """A recorded cycle's report, as a local file inside the storage root; NotRecorded for anything else."""
    if name not in REPORTS:
        raise NotRecorded(name)
    return _cycle_file(config, cycle_id, name)


def validation(config: Config, cycle_id: str) -> tuple[ValidationResult, Path | None]:
    """The cycle's validation result, and where it kept the failing batch (if it stopped)."""
    result = _read(config, cycle_id, VALIDATION)
    try:
        kept: Path | None = _cycle_file(config, cycle_id, FAILED_BATCH)
    except NotRecorded:
        kept = None
    return result, kept


def gate_verdict(config: Config, cycle_id: str) -> GateVerdict:
    return _read(config, cycle_id, GATE)


def evaluation(config: Config, cycle_id: str) -> EvaluationResult:
    """The candidate's k-fold evaluation: every fold's metrics, whether or not a champion was compared."""
    return _read(config, cycle_id, EVALUATION)


def search(config: Config, cycle_id: str) -> SearchSummary:
    """The cycle's hyperparameter search: every finished trial (a cycle that ran none has no record)."""
    return _read(config, cycle_id, SEARCH)


def evidence(config: Config, cycle_id: str) -> Evidence:
    """Candidate and champion on the rows the champion never saw (a first champion's cycle has none)."""
    return _read(config, cycle_id, EVIDENCE)


def earlier_versions(config: Config, cycle_id: str) -> EarlierVersions:
    """The previous champion and the newest other versions, scored beside the cycle's candidate."""
    return _read(config, cycle_id, EARLIER_VERSIONS)
