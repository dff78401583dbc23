"""The record of one cycle: every file it keeps, its status, its approval, and what it logs to MLflow.

A cycle is recorded in two places, both written only through this module:

- its run directory ``<storage root>/<model>/<cycle id>/`` (a local folder or an object store):
  the snapshots, each stage's result as JSON, the reports, the status and the approval;
- its MLflow run (found by the ``cycle_id`` tag) and, once registered, its model version:
  the tags and metrics that MLflow's UI, searches and the review pages read.

Every file is named once, below, and read and written through a typed reader and writer;
writes are atomic (see ``pipeline.storage``). The status moves only along ``TRANSITIONS``,
and the MLflow run's own status follows it, so neither store ever says a cycle finished
when it did not.
"""

from __future__ import annotations

import getpass
import json
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import yaml

from pipeline import registry
from pipeline.config import Config, redact_url
from pipeline.errors import ConfigError, PipelineError, PromotionRefused, StorageError
from pipeline.memory import peak_rss_mb, restart_peak_rss
from pipeline.registry import CycleKind
from pipeline.results import (
    DriftResult,
    EarlierVersions,
    EvaluationResult,
    Evidence,
    FeatureImportance,
    GateVerdict,
    ModelQuality,
    SearchSummary,
    ValidationResult,
    Windows,
    WindowSnapshot,
)
from pipeline.storage import RunStorage

T = TypeVar("T")
Progress = Callable[[str], None]

# A cycle id is a directory name and a value inside MLflow filter strings: a safe set of characters only.
CYCLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")


def check_cycle_id(cycle_id: str) -> str:
    if not CYCLE_ID.fullmatch(cycle_id) or ".." in cycle_id:
        raise ConfigError(
            f"cycle id {cycle_id!r} is not allowed: use letters, digits, '_', '.' and '-' "
            "(no '..', at most 200 characters, starting with a letter or digit)"
        )
    return cycle_id


def default_cycle_id(config: Config, as_of: date) -> str:
    return f"{config.model_name}-{as_of.isoformat()}"


# ---------------------------------------------------------------------------- statuses


class Status(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # the CLI stopped after a stage (--until): later stages may follow
    VALIDATION_STOPPED = "validation_stopped"
    NO_DRIFT = "no_drift"
    DRIFT_DETECTED = "drift_detected"  # a monitoring cycle ends here
    DEGRADED = "degraded"  # a monitoring cycle whose champion's live error rose beyond the margin (drifted or not)
    NOT_DEGRADED = "not_degraded"  # retrain_on: degradation (or drift_or_degradation): nothing called for training
    GATE_REJECTED = "gate_rejected"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # a newer cycle's candidate took its place before anyone decided
    FAILED = "failed"


ENDINGS = frozenset({Status.PAUSED, Status.VALIDATION_STOPPED, Status.NO_DRIFT, Status.DRIFT_DETECTED,
                     Status.DEGRADED, Status.NOT_DEGRADED, Status.GATE_REJECTED, Status.AWAITING_APPROVAL,
                     Status.PROMOTED, Status.REJECTED, Status.FAILED})
# Where each status may go next. Re-running a cycle (back to RUNNING) is allowed from every status but
# SUPERSEDED: its version is no longer the challenger, and re-registering it would take that from the newer one.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.RUNNING: ENDINGS,
    Status.AWAITING_APPROVAL: frozenset({Status.RUNNING, Status.PROMOTED, Status.REJECTED, Status.SUPERSEDED}),
    Status.REJECTED: frozenset({Status.RUNNING, Status.PROMOTED}),  # promoted: `pipeline promote --override`
    Status.SUPERSEDED: frozenset(),
    **{status: frozenset({Status.RUNNING}) for status in ENDINGS - {Status.AWAITING_APPROVAL, Status.REJECTED}},
}
DECISIONS = frozenset({Status.PROMOTED, Status.REJECTED})
# The MLflow run's status for each of the cycle's: RUNNING only while stages run or are due.
RUN_STATUS = {Status.RUNNING: "RUNNING", Status.PAUSED: "SCHEDULED", Status.FAILED: "FAILED",
              Status.VALIDATION_STOPPED: "FAILED"}


def check_transition(cycle_id: str, current: Status | None, new: Status) -> None:
    if current is None or current == new or new in TRANSITIONS[current]:
        return
    error = PromotionRefused if new in DECISIONS else PipelineError
    hint = " (a newer cycle's candidate replaced it: decide on that one)" if current == Status.SUPERSEDED else ""
    raise error(f"cycle {cycle_id} is {current.value}: it cannot become {new.value}{hint}")


# ---------------------------------------------------------------------------- small records


@dataclass(frozen=True)
class TriggerEvent:
    asset: str
    source: str
    extra: dict[str, Any]


@dataclass(frozen=True)
class Trigger:
    """What started the cycle: the CLI, or an Airflow run (nightly, a drift event, or by hand)."""

    kind: str
    user: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    note: str | None = None
    events: list[TriggerEvent] = field(default_factory=list)

    @classmethod
    def cli(cls) -> Trigger:
        return cls(kind="cli", user=default_actor())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        return cls(**{**data, "events": [TriggerEvent(**e) for e in data.get("events", [])]})

    def describe(self) -> str:
        where = f" run {self.run_id}" if self.run_id else ""
        lines = [f"{self.kind}{where}" + (f" by {self.user}" if self.user else "")]
        for event in self.events:
            extra = event.extra
            features = ", ".join(extra.get("drifted_features", [])) or "none"
            # Events from before the quality check carry no reasons: drift was the only one.
            reasons = extra.get("reasons", ["drift"])
            where = f"(cycle {extra.get('cycle_id', '?')}, as of {extra.get('as_of', '?')})"
            if "drift" in reasons:
                lines.append(f"drift event from {event.source}: share {extra.get('drift_share', 0):.0%} {where}; "
                             f"drifted: {features}")
            if "degradation" in reasons:
                quality = extra.get("quality", {})
                lines.append(
                    f"degradation event from {event.source}: champion v{quality.get('champion_version', '?')} "
                    f"{quality.get('primary_metric', 'metric')} {_number(quality.get('live_value'))} live vs "
                    f"{_number(quality.get('kfold_value'))} k-fold, error {_number(quality.get('degradation'), '+.1%')} "
                    f"{where}"
                )
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)


def _number(value: Any, spec: str = ".4f") -> str:
    return "?" if value is None else format(value, spec)


@dataclass(frozen=True)
class Registration:
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Registration:
        return cls(str(data["version"]))


@dataclass(frozen=True)
class LogEntry:
    """One row of the promotion log: who moved which alias when, and why."""

    seq: int
    at: datetime
    actor: str
    action: str
    from_version: str | None
    to_version: str | None
    verdict_id: str | None
    reason: str | None

    def event(self) -> str:
        """The row as the event it was, not as a move from nothing ("promoted v2 (was v1)")."""
        was = f"was v{self.from_version}" if self.from_version else "first champion"
        if self.action == "promote":
            return f"promoted v{self.to_version} ({was})"
        if self.action == "override":
            return f"promoted v{self.to_version} over its rejection ({was})"
        if self.action == "rollback":
            return f"rolled back to v{self.to_version} ({was})"
        if self.action == "reject":
            stays = f"champion stays v{self.from_version}" if self.from_version else "no champion"
            return f"rejected v{self.to_version} ({stays})"
        return f"{self.action} v{self.to_version}"

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"#{self.seq} {self.at:%Y-%m-%d %H:%M:%S} {self.actor}: {self.event()}{why}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogEntry:
        return cls(**{**data, "at": datetime.fromisoformat(data["at"])})


ApprovalSource = Literal["cli", "airflow", "auto"]


@dataclass(frozen=True)
class Approval:
    """A decision on a candidate: who, when, through what, and why. Promotion needs an ``approved`` one."""

    decision: Literal["approved", "rejected"]
    actor: str
    source: ApprovalSource
    comment: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def approved(self) -> bool:
        return self.decision == "approved"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        return cls(**{**data, "at": datetime.fromisoformat(data["at"])})


@dataclass(frozen=True)
class Decision:
    """``approval.json``: the approval and the promotion-log row it produced."""

    approval: Approval
    version: str
    entry: LogEntry

    def to_dict(self) -> dict[str, Any]:
        return {"approval": self.approval.to_dict(), "version": self.version, "entry": self.entry.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(Approval.from_dict(data["approval"]), str(data["version"]), LogEntry.from_dict(data["entry"]))


@dataclass(frozen=True)
class StageTiming:
    seconds: float
    peak_rss_mb: float  # the stage's own peak where the kernel can reset the mark (Linux), else the process's so far


@dataclass(frozen=True)
class StatusRecord:
    """``status.json``: where the cycle stands, and each stage's time across the tasks that ran it."""

    status: Status
    at: datetime
    detail: str | None = None
    stages: dict[str, StageTiming] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "at": self.at.isoformat(), "detail": self.detail,
                "stages": {name: asdict(timing) for name, timing in self.stages.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusRecord:
        return cls(Status(data["status"]), datetime.fromisoformat(data["at"]), data.get("detail"),
                   {name: StageTiming(**timing) for name, timing in data.get("stages", {}).items()})


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


# ---------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class JsonFile(Generic[T]):
    name: str
    parse: Callable[[dict[str, Any]], T]
    dump: Callable[[T], dict[str, Any]]


TRIGGER = JsonFile("trigger.json", Trigger.from_dict, Trigger.to_dict)
WINDOWS = JsonFile("windows.json", Windows.from_dict, Windows.to_dict)
VALIDATION = JsonFile("validation.json", ValidationResult.from_dict, ValidationResult.to_dict)
DRIFT = JsonFile("drift.json", DriftResult.from_dict, DriftResult.to_dict)
QUALITY = JsonFile("quality.json", ModelQuality.from_dict, ModelQuality.to_dict)
EVALUATION = JsonFile("evaluation.json", EvaluationResult.from_dict, EvaluationResult.to_dict)
SEARCH = JsonFile("search.json", SearchSummary.from_dict, SearchSummary.to_dict)
TRIAL_KEY = "trial.number"  # the tag a search trial's child run is found by
GATE = JsonFile("gate.json", GateVerdict.from_dict, GateVerdict.to_dict)
EVIDENCE = JsonFile("evidence.json", Evidence.from_dict, Evidence.to_dict)
EARLIER_VERSIONS = JsonFile("earlier_versions.json", EarlierVersions.from_dict, EarlierVersions.to_dict)
IMPORTANCE = JsonFile("importance.json", FeatureImportance.from_dict, asdict)
REGISTRATION = JsonFile("registered.json", Registration.from_dict, Registration.to_dict)
APPROVAL = JsonFile("approval.json", Decision.from_dict, Decision.to_dict)
STATUS = JsonFile("status.json", StatusRecord.from_dict, StatusRecord.to_dict)

CONFIG_FILE = "config.yaml"
VALIDATION_REPORT = "validation.html"
DRIFT_REPORT = "drift.html"
CANDIDATE = "candidate.joblib"
COMPARED = "compared.parquet"  # the rows the gate compares on, with both models' scores
CHAMPION_SCORES = "champion_scores.parquet"  # the champion's scores on the current window (pipeline.cycle)
FAILED_BATCH = "failed_batch.parquet"
REPORTS = (DRIFT_REPORT, VALIDATION_REPORT)


def snapshot_file(window: str) -> str:
    return f"{window}.parquet"


def recorded_config(config: Config) -> dict[str, Any]:
    """The config as recorded with the cycle: URLs from the environment may carry passwords."""
    dumped = config.model_dump(mode="json")
    for section, key in (("source", "url"), ("registry", "tracking_uri"), ("promotion", "database_url")):
        dumped[section][key] = redact_url(dumped[section][key])
    return dumped


# ---------------------------------------------------------------------------- MLflow: what a model version carries


@dataclass(frozen=True)
class VersionTags:
    """The tags of a registered version: its lineage, the gate's numbers, and the decision on it."""

    cycle_id: str | None = None
    gate_passed: bool = False
    verdict_id: str | None = None
    compared_champion: str | None = None  # the champion the gate compared it against
    primary_metric: str | None = None
    candidate_mean: float | None = None
    improvement: float | None = None
    p_value: float | None = None
    window_start: date | None = None
    window_end: date | None = None
    window_rows: int | None = None
    window_sha256: str | None = None
    device: str | None = None
    family: str | None = None
    params: dict[str, Any] | None = None  # the estimator's parameters it trained with (tuned or training.params)
    approval: str | None = None  # "approved" | "rejected": a person or a policy decided
    decided_by: str | None = None

    @property
    def window(self) -> tuple[date, date] | None:
        if self.window_start is None or self.window_end is None:
            return None
        return self.window_start, self.window_end

    @classmethod
    def of(cls, info: registry.VersionInfo) -> VersionTags:
        tags = info.tags

        def number(key: str) -> float | None:
            return float(tags[key]) if tags.get(key) else None

        def day(key: str) -> date | None:
            return date.fromisoformat(tags[key]) if tags.get(key) else None

        compared = tags.get("gate.champion_version")
        return cls(
            cycle_id=tags.get("cycle_id"), gate_passed=tags.get("gate.passed") == "true",
            verdict_id=tags.get("gate.verdict_id"), compared_champion=None if compared in (None, "none") else compared,
            primary_metric=tags.get("gate.primary_metric"), candidate_mean=number("gate.candidate_mean"),
            improvement=number("gate.improvement"), p_value=number("gate.p_value"),
            window_start=day("window.start"), window_end=day("window.end"),
            window_rows=int(tags["window.rows"]) if tags.get("window.rows") else None,
            window_sha256=tags.get("window.sha256"), device=tags.get("device"), family=tags.get("family"),
            params=json.loads(tags["training.params"]) if tags.get("training.params") else None,
            approval=tags.get("approval"), decided_by=tags.get("approved_by") or tags.get("rejected_by"),
        )

    @staticmethod
    def of_candidate(cycle_id: str, verdict: GateVerdict, current: WindowSnapshot, evaluation: EvaluationResult,
                     family: str) -> dict[str, str]:
        def optional(value: float | None, spec: str) -> str:
            return "" if value is None else format(value, spec)

        return {
            "cycle_id": cycle_id, "gate.passed": "true", "gate.verdict_id": verdict.verdict_id,
            "gate.champion_version": verdict.champion_version or "none",
            "gate.primary_metric": verdict.primary_metric, "gate.candidate_mean": f"{verdict.candidate_mean:.6f}",
            "gate.improvement": optional(verdict.improvement, ".6f"), "gate.p_value": optional(verdict.p_value, ".6g"),
            "window.start": current.start.isoformat(), "window.end": current.end.isoformat(),
            "window.rows": str(current.rows), "window.sha256": current.sha256, "device": evaluation.device,
            "family": family, "training.params": json.dumps(evaluation.params, sort_keys=True),
            **({"search": evaluation.tuning[:4500]} if evaluation.tuning else {}),
        }

    @staticmethod
    def of_decision(approved: bool, actor: str) -> dict[str, str]:
        return {"approval": "approved", "approved_by": actor} if approved else {"approval": "rejected", "rejected_by": actor}


# ---------------------------------------------------------------------------- MLflow: what a cycle's run carries


@dataclass(frozen=True)
class RunSummary:
    """A cycle as its MLflow run describes it: what lists and plots show without opening the run directory."""

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
    # The quality check of the champion the cycle started with: its verdict, the version, its metric live and k-fold.
    quality: str | None = None
    quality_champion: str | None = None
    live_value: float | None = None
    live_rows: int | None = None
    kfold_value: float | None = None
    degradation: float | None = None
    reference_window: tuple[date, date] | None = None
    current_window: tuple[date, date] | None = None
    current_rows: int | None = None
    validation_warnings: int | None = None
    validation_critical: int | None = None
    # Each feature's distance floor and method (cycles recorded before these were logged have none).
    drift_thresholds: dict[str, float] = field(default_factory=dict)
    drift_methods: dict[str, str] = field(default_factory=dict)
    primary_metric: str | None = None
    candidate_mean: float | None = None
    improvement: float | None = None
    gate_p_value: float | None = None
    candidate_compare: float | None = None
    champion_compare: float | None = None

    @classmethod
    def of(cls, run, kind: str) -> RunSummary:
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        drift = tags.get("drift.verdict")
        live_rows = metrics.get("quality.rows")
        primary = params.get("primary_metric")

        def window(name: str) -> tuple[date, date] | None:
            start, end = tags.get(f"window.{name}.start"), tags.get(f"window.{name}.end")
            return (date.fromisoformat(start), date.fromisoformat(end)) if start and end else None

        def count(name: str) -> int | None:
            return None if metrics.get(name) is None else int(metrics[name])
        return cls(
            cycle_id=tags["cycle_id"], kind=kind, as_of=date.fromisoformat(tags["as_of"]),
            started=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
            status=tags.get("cycle.status", Status.RUNNING.value), trigger=tags.get("trigger", "cli"),
            mlflow_run_id=run.info.run_id, validation=tags.get("validation.verdict"),
            dataset_drift=None if drift is None else drift == "drift", drift_share=metrics.get("drift.share"),
            drifted_features=[f for f in tags.get("drift.drifted_features", "").split(",") if f],
            drift_scores={k.removeprefix("drift.score."): v for k, v in metrics.items() if k.startswith("drift.score.")},
            gate=tags.get("gate.verdict"), airflow_dag_id=tags.get("airflow.dag_id"),
            airflow_run_id=tags.get("airflow.run_id"), quality=tags.get("quality.verdict"),
            quality_champion=tags.get("quality.champion_version"), live_value=metrics.get("quality.live"),
            live_rows=None if live_rows is None else int(live_rows), kfold_value=metrics.get("quality.kfold"),
            degradation=metrics.get("quality.degradation"),
            reference_window=window("reference"), current_window=window("current"), current_rows=count("rows.current"),
            validation_warnings=count("validation.warnings"), validation_critical=count("validation.critical_failures"),
            drift_thresholds={k.removeprefix("drift.threshold."): v for k, v in metrics.items()
                              if k.startswith("drift.threshold.")},
            drift_methods=json.loads(tags.get("drift.methods", "{}")),
            primary_metric=primary, candidate_mean=metrics.get(f"cv.{primary}.mean") if primary else None,
            improvement=metrics.get("gate.improvement"), gate_p_value=metrics.get("gate.p_value"),
            candidate_compare=metrics.get("gate.candidate_compare"), champion_compare=metrics.get("gate.champion_compare"),
        )


    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["as_of"], data["started"] = self.as_of.isoformat(), self.started.isoformat()
        for name in ("reference_window", "current_window"):
            window = getattr(self, name)
            data[name] = None if window is None else [day.isoformat() for day in window]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        def window(days: list[str] | None) -> tuple[date, date] | None:
            return None if days is None else (date.fromisoformat(days[0]), date.fromisoformat(days[1]))

        return cls(**{**data, "as_of": date.fromisoformat(data["as_of"]),
                      "started": datetime.fromisoformat(data["started"]),
                      "reference_window": window(data["reference_window"]),
                      "current_window": window(data["current_window"])})


def metric_key(feature: str) -> str:
    """A feature's name as MLflow metric names take it: MLflow refuses characters like $, (, < or €."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", feature)


def drift_metric(feature: str, what: str = "score") -> str:
    """The MLflow metric of a feature's drift score (or threshold)."""
    return f"drift.{what}.{metric_key(feature)}"


def find_run(config: Config, cycle_id: str, kinds: tuple[CycleKind, ...]) -> tuple[Any, CycleKind] | None:
    """A cycle's MLflow run by its ``cycle_id`` tag (no listing, no cap), and its kind."""
    check_cycle_id(cycle_id)
    for kind in kinds:
        found = registry.find_runs(config, kind, f"tags.cycle_id = '{cycle_id}'")
        if found:
            return found[0], kind
    return None


def run_name(model_name: str, cycle_id: str, kind: CycleKind, as_of: date) -> str:
    """The MLflow run's name: as-of date and kind first, where MLflow's runs table cuts long names short, then what
    tells the cycle from others of that day (the Airflow run); the model is the experiment's name already."""
    day, rest = as_of.isoformat(), cycle_id.removeprefix(f"{model_name}-").removeprefix(f"{kind}-")
    return f"{day} {kind}" if rest == day else f"{day} {kind} {rest}"


# ---------------------------------------------------------------------------- the record


@dataclass
class CycleRecord:
    """One cycle's record: its run directory and its MLflow run, read and written through typed methods."""

    config: Config
    cycle_id: str
    kind: CycleKind
    as_of: date
    run_id: str
    storage: RunStorage
    progress: Progress = lambda message: None

    @classmethod
    def start(
        cls, config: Config, as_of: date, cycle_id: str, kind: CycleKind, trigger: Trigger,
        progress: Progress | None = None,
    ) -> CycleRecord:
        """Begin (or begin again) a cycle: its MLflow run, its config and trigger, status running.

        The caller holds the cycle's lock (``pipeline.locks``), so two processes never create two runs.
        """
        check_cycle_id(cycle_id)
        storage = RunStorage(config.storage.root, config.model_name, cycle_id)
        run_id = registry.cycle_run_id(config, cycle_id, kind, {"as_of": as_of.isoformat()},
                                       run_name(config.model_name, cycle_id, kind, as_of))
        record = cls(config, cycle_id, kind, as_of, run_id, storage, progress or (lambda message: None))
        record.set_status(Status.RUNNING)
        storage.write_bytes(CONFIG_FILE, yaml.safe_dump(recorded_config(config), sort_keys=False).encode())
        record.write(TRIGGER, trigger)
        airflow = {"airflow.dag_id": trigger.dag_id, "airflow.run_id": trigger.run_id} if trigger.dag_id else {}
        record.log(
            tags={"as_of": as_of.isoformat(), "git_sha": registry.git_sha(), "run_dir": storage.location,
                  "cycle.kind": kind, "trigger": trigger.kind, **airflow},
            artifacts=[record.local_path(CONFIG_FILE)],
        )
        return record

    @classmethod
    def find(
        cls, config: Config, cycle_id: str | None = None, kinds: tuple[CycleKind, ...] = ("retrain",),
        progress: Progress | None = None,
    ) -> CycleRecord:
        """An existing cycle (default: the newest of the first kind)."""
        if cycle_id is None:
            newest = registry.find_runs(config, kinds[0])
            found = (newest[0], kinds[0]) if newest else None
        else:
            found = find_run(config, cycle_id, kinds)
        if found is None:
            which = f"{kinds[0]} cycle {cycle_id}" if cycle_id else f"{kinds[0]} cycle"
            raise PipelineError(f"no {which} of {config.model_name!r} is recorded in MLflow")
        run, kind = found
        tags = run.data.tags
        return cls(config, tags["cycle_id"], kind, date.fromisoformat(tags["as_of"]), run.info.run_id,
                   RunStorage(config.storage.root, config.model_name, tags["cycle_id"]), progress or (lambda m: None))

    # -- files

    def local_path(self, name: str) -> Path:
        """Where ``name`` is in this process's copy of the run directory (fetched on first use)."""
        path = self.storage.fetch(name)
        if path is None:
            raise PipelineError(f"cycle {self.cycle_id} has no {name} yet: run the earlier stages first")
        return path

    def url_of(self, name: str) -> str:
        return self.storage.url_of(name)

    def read(self, entry: JsonFile[T]) -> T | None:
        path = self.storage.fetch(entry.name)
        if path is None:
            return None
        try:
            return entry.parse(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            where = self.url_of(entry.name)
            raise StorageError(f"{entry.name} of cycle {self.cycle_id} at {where} is unreadable: {exc}") from None

    def require(self, entry: JsonFile[T]) -> T:
        value = self.read(entry)
        if value is None:
            raise PipelineError(f"cycle {self.cycle_id} has no {entry.name} yet: run the earlier stages first")
        return value

    def write(self, entry: JsonFile[T], value: T) -> None:
        text = json.dumps(entry.dump(value), indent=2, default=str, ensure_ascii=False)
        self.storage.write_bytes(entry.name, (text + "\n").encode("utf-8"))

    @contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path to write ``name`` to; it replaces the recorded file only once complete."""
        with self.storage.writing(name) as temporary:
            yield temporary

    def frame(self, window: str, columns: list[str] | None = None):
        """A window's snapshot (only ``columns``, when given)."""
        import pandas as pd

        return pd.read_parquet(self.local_path(snapshot_file(window)), columns=columns)

    def head(self, window: str, rows: int):
        """The first rows of a snapshot without reading all of it."""
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(self.local_path(snapshot_file(window))).iter_batches(batch_size=rows), None)
        return batch.to_pandas() if batch is not None else self.frame(window)

    # -- status

    def status(self) -> StatusRecord | None:
        return self.read(STATUS)

    def set_status(self, status: Status, detail: str | None = None) -> None:
        """Move the cycle to ``status`` (along TRANSITIONS) in the run directory and on the MLflow run."""
        current = self.status()
        check_transition(self.cycle_id, current.status if current else None, status)
        stages = current.stages if current else {}
        self.write(STATUS, StatusRecord(status, datetime.now(UTC), detail, stages))
        registry.log_to_run(self.config, self.run_id, tags={"cycle.status": status.value})
        registry.set_run_status(self.config, self.run_id, RUN_STATUS.get(status, "FINISHED"))
        self._index()

    @contextmanager
    def stage(self, name: str, restart: bool = True) -> Iterator[None]:
        """Time a stage and record its duration and the process's peak memory so far with the cycle.

        ``restart``: the stage computes something anew, so a cycle that had ended (a retried or cleared
        task) is running again.
        """
        current = self.require(STATUS)
        if restart and current.status != Status.RUNNING:
            self.set_status(Status.RUNNING)
        self.progress(f"[{name}] started")
        restart_peak_rss()
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
        current = self.require(STATUS)  # read again: the stage itself may have moved the status
        self.write(STATUS, replace(current, stages={**current.stages, name: StageTiming(seconds, peak)}))
        self.log(metrics={f"duration_s.{name}": seconds, f"peak_rss_mb.{name}": peak})
        self.progress(f"[{name}] done in {seconds:.1f}s")

    # -- MLflow: the cycle's run

    def log(self, **logged: Any) -> None:
        registry.log_to_run(self.config, self.run_id, **logged)
        self._index()

    def _index(self) -> None:
        from pipeline import cycle_index

        cycle_index.refresh(self.config, self.run_id, self.kind)

    def log_windows(self, windows: Windows) -> None:
        import mlflow
        from mlflow.data.pandas_dataset import from_pandas

        tags: dict[str, str] = {}
        for name, snap in windows.items():
            tags |= {f"window.{name}.start": snap.start.isoformat(), f"window.{name}.end": snap.end.isoformat(),
                     f"window.{name}.rows": str(snap.rows), f"window.{name}.sha256": snap.sha256}
        self.log(tags=tags, metrics={f"rows.{name}": snap.rows for name, snap in windows.items()})
        with registry.inside_run(self.config, self.run_id), warnings.catch_warnings():
            # MLflow registers two identical local-file source classes and warns that a path matches both; and it
            # hints about integer columns, which concerns model signatures, not a dataset's recorded schema.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted", UserWarning)
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
            for name, snap in windows.items():
                # MLflow's own digest covers only 10,000 rows; ours covers every value (first 32 hex chars fit its column).
                dataset = from_pandas(
                    self.head(name, 1000), source=self.url_of(snapshot_file(name)),
                    name=f"{self.config.model_name}-{name}-{snap.start}..{snap.end}", digest=snap.sha256[:32],
                )
                mlflow.log_input(dataset, context="training" if name == "current" else "reference")

    def log_validation(self, result: ValidationResult) -> None:
        failed = [o.message for o in result.outcomes if not o.success]
        self.log(
            metrics={"validation.passed": float(result.passed), "validation.critical_failures": len(result.critical_failures),
                     "validation.warnings": len(result.warnings)},
            tags={"validation.verdict": "passed" if result.passed else "stopped",
                  "validation.failed": json.dumps(failed)[:4500]},
            artifacts=[self.local_path(VALIDATION_REPORT), self.local_path(VALIDATION.name)],
        )

    def log_drift(self, result: DriftResult) -> None:
        methods = json.dumps({metric_key(f.feature): f.method for f in result.features if f.method})
        self.log(
            metrics={"drift.share": result.drifted_share, "drift.dataset_drift": float(result.dataset_drift),
                     **{drift_metric(f.feature): f.score for f in result.features if f.score is not None},
                     **{drift_metric(f.feature, "threshold"): f.threshold for f in result.features
                        if f.threshold is not None}},
            tags={"drift.verdict": "drift" if result.dataset_drift else "no_drift",
                  "drift.drifted_features": ",".join(result.drifted_features),
                  # Cut, the JSON would not parse: with too many features the pages name no method.
                  **({"drift.methods": methods} if len(methods) <= 4500 else {})},
            artifacts=[self.local_path(DRIFT_REPORT), self.local_path(DRIFT.name)],
        )

    def log_quality(self, result: ModelQuality) -> None:
        self.log(
            metrics={"quality.live": result.live_value, "quality.kfold": result.kfold_value, "quality.rows": result.rows,
                     "quality.degradation": result.degradation, "quality.degradation_lower": result.degradation_lower,
                     "quality.p_value": result.p_value, "quality.degraded": float(result.degraded)},
            tags={"quality.verdict": result.verdict, "quality.champion_version": result.champion_version or "none",
                  "quality.reason": result.reason[:4500]},
            artifacts=[self.local_path(QUALITY.name)],
        )

    def log_evaluation(self, evaluation: EvaluationResult, best_iteration: int | None, fit_seconds: float) -> None:
        from pipeline.train import resolve_threads

        config, names = self.config, list(evaluation.metric_means)
        self.log(
            params={"family": config.training.family, "device": evaluation.device, "k": config.evaluation.k,
                    "final_model": config.training.final_model, "threads": resolve_threads(config),
                    "split": config.evaluation.split, "primary_metric": config.primary_metric,
                    **{f"model.{k}": v for k, v in config.training.params.items()}},
            metrics={**{f"cv.{n}.mean": evaluation.metric_means[n] for n in names},
                     **{f"cv.{n}.std": evaluation.metric_stds[n] for n in names},
                     "final.best_iteration": best_iteration, "final.fit_s": fit_seconds},
            step_metrics={f"fold.{n}": [f.metrics[n] for f in evaluation.folds] for n in names},
            tags={"device": evaluation.device},
        )

    def log_search(self, summary: SearchSummary) -> None:
        """The search's outcome on the cycle's run, and each finished trial as a child run of it (once: a resumed
        search logs only the trials it finished since)."""
        self.log(tags={"search": summary.describe()[:4500], "search.study": summary.study,
                       "search.best_params": json.dumps(summary.best_params, sort_keys=True)[:4500]},
                 metrics={"search.trials": len(summary.trials), "search.pruned": summary.count("pruned"),
                          "search.seconds": summary.seconds},
                 artifacts=[self.local_path(SEARCH.name)])
        children = registry.child_runs(self.config, self.run_id, TRIAL_KEY)
        for trial in summary.trials:
            if str(trial.number) in children.finished:
                continue
            registry.log_child_run(
                self.config, self.run_id, children, f"trial {trial.number}", TRIAL_KEY, str(trial.number),
                params={f"model.{k}": v for k, v in trial.params.items()},
                metrics={"trial.objective": trial.value, "trial.seconds": trial.seconds,
                         "trial.folds": len(trial.fold_values)},
                step_metrics={f"trial.fold.{summary.metric}": trial.fold_values},
                tags={"trial.state": trial.state, "trial.role": trial.role or "", "trial.worker": trial.worker or "",
                      "search.study": summary.study},
            )

    def log_evidence(self) -> None:
        self.log(artifacts=[self.local_path(EVIDENCE.name)])

    def log_gate(self, verdict: GateVerdict) -> None:
        self.log(
            metrics={"gate.passed": float(verdict.passed), "gate.improvement": verdict.improvement,
                     "gate.improvement_lower": verdict.improvement_lower, "gate.p_value": verdict.p_value,
                     "gate.power": verdict.power, "gate.compare_rows": verdict.compare_rows,
                     "gate.champion_compare": verdict.champion_compare,
                     "gate.candidate_compare": verdict.candidate_compare,
                     "gate.recent_improvement": verdict.recent_improvement, "gate.recent_p_value": verdict.recent_p_value},
            step_metrics={"gate.fold_candidate": verdict.fold_candidate, "gate.fold_champion": verdict.fold_champion},
            tags={"gate.verdict": "passed" if verdict.passed else "rejected", "gate.reasons": "\n".join(verdict.reasons)[:4500]},
            artifacts=[self.local_path(GATE.name)],
        )


# ---------------------------------------------------------------------------- a cycle as recorded


@dataclass
class CycleOutcome:
    """Everything a cycle produced so far, in memory (run_cycle) or read back from its record."""

    cycle: CycleRecord
    status: Status
    trigger: Trigger | None = None
    windows: Windows | None = None
    validation: ValidationResult | None = None
    drift: DriftResult | None = None
    quality: ModelQuality | None = None
    evaluation: EvaluationResult | None = None
    verdict: GateVerdict | None = None
    version: registry.VersionInfo | None = None
    decision: Decision | None = None
    detail: str | None = None

    @classmethod
    def read(cls, cycle: CycleRecord) -> CycleOutcome:
        """The outcome as the cycle's stages recorded it (they may have run as separate tasks or processes)."""
        status = cycle.status()
        registered = cycle.read(REGISTRATION)
        current = status.status if status else Status.RUNNING
        return cls(
            cycle, current, trigger=cycle.read(TRIGGER), windows=cycle.read(WINDOWS), validation=cycle.read(VALIDATION),
            drift=cycle.read(DRIFT), quality=cycle.read(QUALITY), evaluation=cycle.read(EVALUATION), verdict=cycle.read(GATE),
            version=registry.get_version(cycle.config, registered.version) if registered else None,
            decision=cycle.read(APPROVAL), detail=status.detail if status else None,
        )
