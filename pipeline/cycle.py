"""One retraining cycle as of a date: load → validate → drift → train (k-fold) → gate → register → promote.

Each stage is its own function that reads its inputs from, and writes its result
to, the cycle's run directory (``<storage root>/<model>/<cycle id>``), so an
orchestrator can run them as separate tasks and re-run any of them: a re-run
overwrites its files and reuses the cycle's MLflow run and model version.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, suppress
from functools import partial
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import yaml

from pipeline import data, registry
from pipeline.config import Config
from pipeline.errors import GateRejected, PipelineError, ValidationStopped
from pipeline.storage import RunStorage

STAGES = ("load", "validate", "drift", "train", "gate", "register", "promote")
Progress = Callable[[str], None]


def default_cycle_id(config: Config, as_of: date) -> str:
    return f"{config.model_name}-{as_of.isoformat()}"


@dataclass
class Cycle:
    """Where a cycle keeps its files and its MLflow run."""

    config: Config
    as_of: date
    cycle_id: str
    storage: RunStorage
    run_id: str
    progress: Progress = lambda message: None
    durations: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.storage.local_dir

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def write_json(self, name: str, payload: dict) -> Path:
        path = self.path(name)
        path.write_text(json.dumps(payload, indent=2, default=str))
        return path

    def read_json(self, name: str) -> dict:
        path = self.path(name)
        if not path.exists():
            raise PipelineError(f"cycle {self.cycle_id} has no {name} yet: run the earlier stages first")
        return json.loads(path.read_text())

    @contextmanager
    def stage(self, name: str):
        self.progress(f"[{name}] started")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.storage.push()
        self.durations[name] = time.perf_counter() - started
        # The process's peak so far: a stage's own peak is where this number jumps.
        self.peak_rss_mb[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.progress(f"[{name}] done in {self.durations[name]:.1f}s")
        registry.log_to_run(
            self.config, self.run_id,
            metrics={f"duration_s.{name}": self.durations[name], f"peak_rss_mb.{name}": self.peak_rss_mb[name]},
        )


def open_cycle(
    config: Config, as_of: date, cycle_id: str | None = None, progress: Progress | None = None,
    kind: registry.CycleKind = "retrain", tags: dict[str, str] | None = None,
) -> Cycle:
    """Open (or re-open) a cycle: its run directory, pulled from the store, and its MLflow run.

    ``kind="monitor"`` cycles (load, validate, drift only) log to the model's monitoring experiment.
    """
    cycle_id = cycle_id or default_cycle_id(config, as_of)
    storage = RunStorage(config.storage.root, config.model_name, cycle_id)
    storage.pull()
    run_id = registry.cycle_run_id(config, cycle_id, kind)
    cycle = Cycle(config, as_of, cycle_id, storage, run_id, progress or (lambda message: None))
    config_path = cycle.path("config.yaml")
    config_path.write_text(yaml.safe_dump(recorded_config(config), sort_keys=False))
    storage.push()
    registry.log_to_run(
        config, run_id,
        tags={"as_of": as_of.isoformat(), "git_sha": registry.git_sha(), "run_dir": storage.location,
              "cycle.kind": kind, **(tags or {})},
        artifacts=[str(config_path)],
    )
    return cycle


def find_cycle(config: Config, cycle_id: str | None = None, kind: registry.CycleKind = "retrain") -> Cycle:
    """An existing cycle, read-only (default: the newest one): for summaries, reviews and notifications."""
    mlflow_client = registry.client(config)
    where = f"tags.cycle_id = '{cycle_id}'" if cycle_id else ""
    runs = mlflow_client.search_runs(
        [registry.experiment_id(config, kind)], where, max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not runs:
        which = f"{kind} cycle {cycle_id}" if cycle_id else f"{kind} cycle"
        raise PipelineError(f"no {which} of {config.model_name!r} is recorded in MLflow")
    tags = runs[0].data.tags
    storage = RunStorage(config.storage.root, config.model_name, tags["cycle_id"])
    storage.pull()
    return Cycle(config, date.fromisoformat(tags["as_of"]), tags["cycle_id"], storage, runs[0].info.run_id)


def recorded_config(config: Config) -> dict:
    """The config as recorded with the cycle: URLs from the environment may carry passwords."""
    dumped = config.model_dump(mode="json")
    for section, key in (("source", "url"), ("registry", "tracking_uri"), ("promotion", "database_url")):
        dumped[section][key] = data.redact_url(dumped[section][key])
    return dumped


def load_stage(cycle: Cycle) -> dict[str, data.WindowSnapshot]:
    """Snapshot the current window and the reference window (the champion's training window, if any)."""
    config = cycle.config
    with cycle.stage("load"):
        current = data.current_window(config, cycle.as_of)
        champion = _champion_at_start(cycle)
        champion_window = champion.window if champion else None
        if champion_window:
            reference = data.WindowSpec("reference", *champion_window)
        else:
            reference = data.initial_reference_window(config, current)
        snapshots = {w.name: data.snapshot_window(config.source, w, cycle.run_dir) for w in (current, reference)}
        notes = []
        if champion and champion.tags.get("window.sha256") not in (None, snapshots["reference"].sha256):
            notes.append(
                f"the rows of champion v{champion.version}'s window {reference.label()} changed in the source "
                "since it was trained (sha256 differs)"
            )
        cycle.write_json(
            "windows.json",
            {"windows": {k: s.to_dict() for k, s in snapshots.items()},
             "champion_version": champion.version if champion else None, "notes": notes},
        )
        _log_windows(cycle, snapshots)
    for note in notes:
        cycle.progress(f"[load] note: {note}")
    return snapshots


def _champion_at_start(cycle: Cycle) -> registry.VersionInfo | None:
    """The champion when the cycle first ran: a re-run must compare against the same one, not its own result."""
    config = cycle.config
    recorded = registry.run_tags(config, cycle.run_id).get("cycle.champion_at_start")
    if recorded is None:
        champion = registry.alias_version(config, registry.CHAMPION)
        registry.log_to_run(config, cycle.run_id, tags={"cycle.champion_at_start": champion.version if champion else "none"})
        return champion
    return None if recorded == "none" else registry.get_version(config, recorded)


def _log_windows(cycle: Cycle, snapshots: dict[str, data.WindowSnapshot]) -> None:
    import mlflow

    config = cycle.config
    tags = {}
    for name, snap in snapshots.items():
        tags |= {f"window.{name}.start": snap.start.isoformat(), f"window.{name}.end": snap.end.isoformat(),
                 f"window.{name}.rows": str(snap.rows), f"window.{name}.sha256": snap.sha256}
    registry.log_to_run(config, cycle.run_id, tags=tags,
                        metrics={f"rows.{name}": s.rows for name, s in snapshots.items()})
    registry.client(config)
    with mlflow.start_run(run_id=cycle.run_id), warnings.catch_warnings():
        # MLflow registers two identical local-file source classes and warns that a path matches both; and it
        # hints about integer columns, which concerns model signatures, not a dataset's recorded schema.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted", UserWarning)
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        for name, snap in snapshots.items():
            # MLflow's own digest covers only 10,000 rows; ours covers every value (first 32 hex chars fit its column).
            dataset = mlflow.data.from_pandas(
                snap.head(1000), source=str(Path(snap.path).resolve()),
                name=f"{config.model_name}-{name}-{snap.start}..{snap.end}", digest=snap.sha256[:32],
            )
            mlflow.log_input(dataset, context="training" if name == "current" else "reference")


def windows_of(cycle: Cycle) -> dict[str, data.WindowSnapshot]:
    """The snapshots, at their place in this process's run directory (another task may have written them)."""
    snapshots = (data.WindowSnapshot.from_dict(v) for v in cycle.read_json("windows.json")["windows"].values())
    return {s.name: replace(s, path=str(cycle.path(Path(s.path).name))) for s in snapshots}


def validate_stage(cycle: Cycle):
    """Validate the current window; a critical failure stops the cycle, keeping its snapshot."""
    from pipeline.validate import validate_window

    config = cycle.config
    current = windows_of(cycle)["current"]
    with cycle.stage("validate"):
        result = validate_window(config, current.read(), cycle.run_dir, window_label=f"current {current.start}..{current.end}")
        failed = [o for o in result.outcomes if not o.success]
        registry.log_to_run(
            config, cycle.run_id,
            metrics={"validation.passed": float(result.passed), "validation.critical_failures": len(result.critical_failures),
                     "validation.warnings": len(result.warnings)},
            tags={"validation.verdict": "passed" if result.passed else "stopped",
                  "validation.failed": json.dumps([o.message for o in failed])[:4500]},
            artifacts=[result.report_path, result.result_path],
        )
    if not result.passed:
        kept = cycle.run_dir / "failed_batch.parquet"
        shutil.copyfile(current.path, kept)
        finish_cycle(cycle, "validation_stopped", "FAILED")
        raise ValidationStopped(
            f"validation stopped cycle {cycle.cycle_id}; the failing batch is kept at {kept}\n{result.summary()}"
        )
    return result


def drift_stage(cycle: Cycle):
    from pipeline.drift import detect_drift

    config = cycle.config
    snapshots = windows_of(cycle)
    with cycle.stage("drift"):
        result = detect_drift(config, snapshots["reference"].read(), snapshots["current"].read(), cycle.run_dir)
        registry.log_to_run(
            config, cycle.run_id,
            metrics={"drift.share": result.drifted_share, "drift.dataset_drift": float(result.dataset_drift),
                     **{drift_metric(f.feature): f.score for f in result.features if f.score is not None}},
            tags={"drift.verdict": "drift" if result.dataset_drift else "no_drift",
                  "drift.drifted_features": ",".join(result.drifted_features)},
            artifacts=[result.report_path, result.summary_path],
        )
    return result


def drift_metric(feature: str) -> str:
    """The MLflow metric of a feature's drift score: MLflow refuses names with characters like $, (, < or €."""
    return "drift.score." + re.sub(r"[^A-Za-z0-9_\-. :/]", "_", feature)


def train_stage(cycle: Cycle):
    """k-fold evaluate the candidate (and the champion on the same unseen rows), then fit on the whole window."""
    import joblib

    from pipeline.evaluate import evaluate_kfold
    from pipeline.train import encode_target, fit_model, resolve_device

    config = cycle.config
    snapshots = windows_of(cycle)
    with cycle.stage("train"):
        device = resolve_device(config)
        frame = snapshots["current"].read()
        champion = _champion_for_evaluation(cycle)
        evaluation = evaluate_kfold(config, frame, device, champion, progress=lambda m: cycle.progress(f"[train] {m}"))
        cycle.progress(f"[train] final fit on all {len(frame):,} rows")
        model, info = fit_model(config, frame, encode_target(config, frame[config.source.target_column]), device)
        joblib.dump(model, cycle.path("candidate.joblib"))
        evaluation.write(cycle.path("evaluation.json"))
        names = list(evaluation.metric_means)
        registry.log_to_run(
            config, cycle.run_id,
            params={"family": config.training.family, "device": device, "k": config.evaluation.k,
                    "split": config.evaluation.split, "primary_metric": config.primary_metric,
                    **{f"model.{k}": v for k, v in config.training.params.items()}},
            metrics={**{f"cv.{n}.mean": evaluation.metric_means[n] for n in names},
                     **{f"cv.{n}.std": evaluation.metric_stds[n] for n in names},
                     "final.best_iteration": info.best_iteration, "final.fit_s": info.seconds},
            step_metrics={f"fold.{n}": [f.metrics[n] for f in evaluation.folds] for n in names},
            tags={"device": device},
        )
    return evaluation


def _champion_for_evaluation(cycle: Cycle):
    from pipeline.evaluate import Champion

    version = cycle.read_json("windows.json")["champion_version"]
    info = registry.get_version(cycle.config, version) if version else None
    if info is None or info.window is None:
        return None
    return Champion(info.version, registry.load_model(cycle.config, info.version), *info.window)


def gate_stage(cycle: Cycle):
    from pipeline.evaluate import EvaluationResult
    from pipeline.gate import decide

    config = cycle.config
    with cycle.stage("gate"):
        evaluation = EvaluationResult.from_dict(cycle.read_json("evaluation.json"))
        verdict = decide(evaluation, config.gate, verdict_id=cycle.cycle_id)
        path = cycle.write_json("gate.json", verdict.to_dict())
        registry.log_to_run(
            config, cycle.run_id,
            metrics={"gate.passed": float(verdict.passed), "gate.improvement": verdict.improvement,
                     "gate.p_value": verdict.p_value},
            step_metrics={"gate.fold_candidate": verdict.fold_candidate, "gate.fold_champion": verdict.fold_champion},
            tags={"gate.verdict": "passed" if verdict.passed else "rejected", "gate.reasons": "\n".join(verdict.reasons)[:4500]},
            artifacts=[str(path)],
        )
    if not verdict.passed:
        finish_cycle(cycle, "gate_rejected", "FINISHED")
        failed = [r for r in verdict.reasons if r.startswith("FAIL")]
        raise GateRejected(f"gate rejected the candidate of cycle {cycle.cycle_id}:\n  " + "\n  ".join(failed))
    return verdict


def register_stage(cycle: Cycle) -> registry.VersionInfo:
    """Register the gated candidate as ``challenger`` (refuses anything without a passing verdict)."""
    import joblib

    from pipeline.gate import GateVerdict

    config = cycle.config
    verdict = GateVerdict.from_dict(cycle.read_json("gate.json"))
    if not verdict.passed:
        raise GateRejected(f"cycle {cycle.cycle_id} has no passing gate verdict; nothing to register")
    snapshots, evaluation = windows_of(cycle), cycle.read_json("evaluation.json")
    current = snapshots["current"]
    with cycle.stage("register"):
        model = joblib.load(cycle.path("candidate.joblib"))
        example = current.head(5)[config.source.features.all]
        # Integer columns in a signature reject missing values at serving time; the model takes floats.
        example = example.astype({column: "float64" for column in config.source.features.numeric})
        tags = {
            "cycle_id": cycle.cycle_id, "gate.passed": "true", "gate.verdict_id": verdict.verdict_id,
            "gate.champion_version": verdict.champion_version or "none",
            "gate.primary_metric": verdict.primary_metric, "gate.candidate_mean": f"{verdict.candidate_mean:.6f}",
            "gate.improvement": "" if verdict.improvement is None else f"{verdict.improvement:.6f}",
            "gate.p_value": "" if verdict.p_value is None else f"{verdict.p_value:.6g}",
            "window.start": current.start.isoformat(), "window.end": current.end.isoformat(),
            "window.rows": str(current.rows), "window.sha256": current.sha256,
            "device": evaluation["device"], "family": config.training.family,
        }
        version = registry.register_candidate(config, cycle.run_id, model, example, tags)
        cycle.write_json("registered.json", {"version": version.version})
    return version


def promote_stage(cycle: Cycle, actor: str | None = None):
    """Promote the registered challenger when the config approves automatically; otherwise it waits for a person."""
    from pipeline import promote

    config = cycle.config
    version = cycle.read_json("registered.json")["version"]
    if config.promotion.approval != "auto":
        finish_cycle(cycle, "awaiting_approval", "FINISHED")
        return None
    with cycle.stage("promote"):
        entry = promote.promote(config, version, actor=actor or "auto-approval", reason="promotion.approval: auto")
    finish_cycle(cycle, "promoted", "FINISHED")
    return entry


def finish_cycle(cycle: Cycle, status: str, run_status: str) -> None:
    cycle.write_json("status.json", {"status": status, "durations": cycle.durations})
    cycle.storage.push()
    registry.log_to_run(cycle.config, cycle.run_id, tags={"cycle.status": status})
    registry.set_run_status(cycle.config, cycle.run_id, run_status)


@dataclass
class CycleOutcome:
    cycle: Cycle
    status: str
    windows: dict = field(default_factory=dict)
    validation: object = None
    drift: object = None
    evaluation: object = None
    verdict: object = None
    version: registry.VersionInfo | None = None
    promotion: object = None
    error: PipelineError | None = None


def run_cycle(
    config: Config, as_of: date, cycle_id: str | None = None, until: str = "promote",
    actor: str | None = None, progress: Progress | None = None,
) -> CycleOutcome:
    """Run the stages up to and including ``until``; verdicts end the cycle with their status, not an exception."""
    from pipeline.gate import GateVerdict
    from pipeline.validate import ValidationResult

    if until not in STAGES:
        raise PipelineError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    cycle = open_cycle(config, as_of, cycle_id, progress)
    outcome = CycleOutcome(cycle, status="running")
    stages = {
        "load": ("windows", load_stage), "validate": ("validation", validate_stage), "drift": ("drift", drift_stage),
        "train": ("evaluation", train_stage), "gate": ("verdict", gate_stage), "register": ("version", register_stage),
        "promote": ("promotion", partial(promote_stage, actor=actor)),
    }
    try:
        for name in STAGES[: STAGES.index(until) + 1]:
            attribute, stage = stages[name]
            setattr(outcome, attribute, stage(cycle))
    except ValidationStopped as exc:
        outcome.status, outcome.error = "validation_stopped", exc
        outcome.validation = ValidationResult.from_dict(cycle.read_json("validation.json"))
        return outcome
    except GateRejected as exc:
        outcome.status, outcome.error = "gate_rejected", exc
        outcome.verdict = GateVerdict.from_dict(cycle.read_json("gate.json"))
        return outcome
    except Exception:
        with suppress(Exception):  # the original fault matters more than failing to record it
            finish_cycle(cycle, "failed", "FAILED")
        raise
    if until != "promote":
        outcome.status = f"stopped after {until}"
    else:
        outcome.status = "promoted" if outcome.promotion else "awaiting_approval"
        outcome.version = registry.get_version(config, outcome.version.version)
    return outcome


def recorded_outcome(cycle: Cycle) -> CycleOutcome:
    """The outcome of a cycle as its stages recorded it, when they ran as separate tasks (or processes)."""
    from pipeline import promote
    from pipeline.drift import DriftResult
    from pipeline.evaluate import EvaluationResult
    from pipeline.gate import GateVerdict
    from pipeline.validate import ValidationResult

    def recorded(name: str, parse):
        return parse(cycle.read_json(name)) if cycle.path(name).exists() else None

    status = recorded("status.json", lambda d: d["status"]) or "running"
    outcome = CycleOutcome(
        cycle, status,
        windows=windows_of(cycle) if cycle.path("windows.json").exists() else {},
        validation=recorded("validation.json", ValidationResult.from_dict),
        drift=recorded("drift.json", DriftResult.from_dict),
        evaluation=recorded("evaluation.json", EvaluationResult.from_dict),
        verdict=recorded("gate.json", GateVerdict.from_dict),
    )
    version = recorded("registered.json", lambda d: d["version"])
    if version is not None:
        outcome.version = registry.get_version(cycle.config, version)
        outcome.promotion = next(
            (e for e in promote.history(cycle.config) if e.verdict_id == cycle.cycle_id and e.to_version == version), None
        )
    return outcome
