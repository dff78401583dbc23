"""One retraining cycle as of a date: load → validate → drift → quality → train (k-fold) → gate → register → promote.

A monitoring cycle is its first four stages: the data's drift and the champion's live quality.

Each stage is a function of the cycle's record (``pipeline.record``): it takes the results of
earlier stages in memory, or reads them from the record when it runs as a task of its own,
runs its stage module, records its result and returns it. A verdict — validation stopped the
cycle, the gate rejected the candidate — is a returned value that also moves the cycle's
status; only faults raise.

Any stage may be killed and run again, by the CLI, an Airflow retry or a cleared task: every
write replaces a whole file, the MLflow run and model version are found again instead of made
anew, and the cycle's lock (``pipeline.locks``) keeps a second process out while one works.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date

from pipeline import data, locks, promote, registry
from pipeline.approval import auto_approval, decide, settle
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError, PromotionRefused
from pipeline.record import (
    APPROVAL,
    CANDIDATE,
    CHAMPION_SCORES,
    COMPARED,
    CONFIG_FILE,
    DRIFT,
    DRIFT_REPORT,
    EARLIER_VERSIONS,
    EVALUATION,
    EVIDENCE,
    FAILED_BATCH,
    GATE,
    IMPORTANCE,
    QUALITY,
    REGISTRATION,
    SEARCH,
    STATUS,
    VALIDATION,
    VALIDATION_REPORT,
    WINDOWS,
    Approval,
    CycleOutcome,
    CycleRecord,
    Decision,
    Progress,
    Registration,
    Status,
    Trigger,
    VersionTags,
    check_cycle_id,
    default_cycle_id,
    snapshot_file,
)
from pipeline.registry import CycleKind
from pipeline.results import (
    DriftResult,
    EvaluationResult,
    GateVerdict,
    ModelQuality,
    ValidationResult,
    Windows,
    WindowSnapshot,
)

STAGES = ("load", "validate", "drift", "quality", "train", "gate", "register", "promote")


@contextmanager
def open_cycle(
    config: Config, as_of: date, cycle_id: str | None = None, kind: CycleKind = "retrain",
    trigger: Trigger | None = None, progress: Progress | None = None,
) -> Iterator[CycleRecord]:
    """Start (or start again) a cycle and hold it: its lock, its MLflow run, its config and trigger recorded."""
    cycle_id = check_cycle_id(cycle_id or default_cycle_id(config, as_of))
    with locks.cycle_lock(config, cycle_id):
        yield CycleRecord.start(config, as_of, cycle_id, kind, trigger or Trigger.cli(), progress)


@contextmanager
def resume_cycle(
    config: Config, cycle_id: str, kind: CycleKind = "retrain", progress: Progress | None = None,
) -> Iterator[CycleRecord]:
    """A started cycle, held for its next stage (a task after the first)."""
    with locks.cycle_lock(config, cycle_id):
        yield CycleRecord.find(config, cycle_id, (kind,), progress)


def load_stage(cycle: CycleRecord) -> Windows:
    """Snapshot the current window and the reference window (``drift.reference``: by default the champion's training window)."""
    config = cycle.config
    with cycle.stage("load"):
        current = data.current_window(config, cycle.as_of)
        champion = _champion_at_start(cycle)
        champion_version, champion_tags = champion if champion else (None, VersionTags())
        snapshots, notes = {}, []

        def snapshot(window: data.WindowSpec) -> WindowSnapshot:
            with cycle.writing(snapshot_file(window.name)) as path:
                if config.compute.engine == "dask":
                    from pipeline.distributed import snapshot_on_cluster

                    return snapshot_on_cluster(config, window, path, cycle.url_of(f"{window.name}.days"))
                return data.snapshot_window(config.source, window, path)

        for window in (current, data.reference_window(config, current, champion_tags.window)):
            snapshots[window.name] = snapshot(window)
        fallback = data.champion_reference(config, current, champion_tags.window)
        if data.reference_falls_back(config, snapshots["reference"].rows):
            notes.append(f"drift.reference same_period_last_year: {snapshots['reference'].label()} has "
                         f"{snapshots['reference'].rows:,} rows (the history is shorter); compared with "
                         f"{fallback.label()} instead")
            snapshots["reference"] = snapshot(fallback)
        if not snapshots["current"].rows:
            notes.append(data.empty_window_note(config.source, current))
        notes += reference_notes(snapshots["reference"])
        mismatch = promote.champion_mismatch(config)
        if mismatch:
            notes.append(f"WARNING: {mismatch}")
        if champion_tags.window_sha256 not in (None, snapshots["reference"].sha256) and (
                snapshots["reference"].start, snapshots["reference"].end) == champion_tags.window:
            notes.append(
                f"the rows of champion v{champion_version}'s window {snapshots['reference'].label()} changed in the "
                "source since it was trained (sha256 differs)"
            )
        windows = Windows(snapshots["current"], snapshots["reference"], champion_version, notes, uuid.uuid4().hex)
        cycle.write(WINDOWS, windows)
        cycle.log_windows(windows)
    for note in notes:
        cycle.progress(f"[load] note: {note}")
    return windows


def reference_notes(reference: WindowSnapshot) -> list[str]:
    """What a person should know about the reference window before trusting drift on it."""
    if not reference.rows:
        return [f"the reference window {reference.label()} has no rows"]
    if reference.first_day is not None and reference.first_day > reference.start:
        return [f"the reference window {reference.label()} has rows only from {reference.first_day} "
                f"({reference.rows:,} rows): the data starts later"]
    return []


def _champion_at_start(cycle: CycleRecord) -> tuple[str, VersionTags] | None:
    """The champion when the cycle first loaded: a re-run compares against the same one, not against its own result."""
    recorded = cycle.read(WINDOWS)
    if recorded is not None:
        version = recorded.champion_version
    else:
        info = registry.alias_version(cycle.config, registry.CHAMPION)
        version = info.version if info else None
    if version is None:
        return None
    return version, VersionTags.of(registry.get_version(cycle.config, version))


def validate_stage(cycle: CycleRecord, windows: Windows | None = None) -> ValidationResult:
    """Validate the current window; a critical failure stops the cycle and keeps the failing batch."""
    from pipeline.validate import render_html, validate_window

    current = (windows or cycle.require(WINDOWS)).current
    with cycle.stage("validate"):
        result = validate_window(cycle.config, cycle.frame("current"))
        cycle.write(VALIDATION, result)
        with cycle.writing(VALIDATION_REPORT) as report:
            report.write_text(render_html(result, cycle.config.model_name, f"current {current.label()}"), encoding="utf-8")
        cycle.log_validation(result)
        if not result.passed:
            with cycle.writing(FAILED_BATCH) as kept:
                shutil.copyfile(cycle.local_path(snapshot_file("current")), kept)
    if not result.passed:
        cycle.set_status(Status.VALIDATION_STOPPED, detail=f"the failing batch is kept at {cycle.url_of(FAILED_BATCH)}")
    return result


def drift_stage(cycle: CycleRecord) -> DriftResult:
    """Measure drift between the windows' snapshots."""
    from pipeline.drift import detect_drift

    with cycle.stage("drift"):
        with cycle.writing(DRIFT_REPORT) as report:
            if cycle.config.compute.engine == "dask":
                from pipeline.distributed import detect_drift_on_cluster

                windows = cycle.require(WINDOWS)
                snapshots = {name: (cycle.url_of(snapshot_file(name)), window.start, window.end)
                             for name, window in (("reference", windows.reference), ("current", windows.current))}
                result = detect_drift_on_cluster(cycle.config, snapshots, report)
            else:
                features = cycle.config.source.features.all
                result = detect_drift(cycle.config, cycle.frame("reference", features), cycle.frame("current", features),
                                      report)
        cycle.write(DRIFT, result)
        cycle.log_drift(result)
    return result


def quality_stage(cycle: CycleRecord, windows: Windows | None = None) -> ModelQuality:
    """Score the champion the cycle started with on the current window's labelled rows it never trained on.

    A monitoring cycle ends here: degraded, else drift detected or not.
    """
    from pipeline.evaluate import with_window_scores
    from pipeline.monitor import check_quality, no_champion

    windows = windows or cycle.require(WINDOWS)
    with cycle.stage("quality"):
        champion = _champion_of(cycle, windows)
        # Without a champion the snapshot is not even fetched (from an object store, it may be large).
        if champion is None:
            result = no_champion(cycle.config)
        else:
            frame = cycle.frame("current")
            champion = with_window_scores(cycle.config, frame, champion)
            result = check_quality(cycle.config, frame, champion, cycle.as_of)
            _write_champion_scores(cycle, champion, windows)
        cycle.write(QUALITY, result)
        cycle.log_quality(result)
    if cycle.kind == "monitor":
        drifted = cycle.require(DRIFT).dataset_drift
        cycle.set_status(Status.DEGRADED if result.degraded else Status.DRIFT_DETECTED if drifted else Status.NO_DRIFT)
    return result


def finish_without_training(cycle: CycleRecord) -> None:
    """``orchestration.retrain_on`` found nothing it retrains for: the cycle ends after the checks."""
    if cycle.config.orchestration.retrain_on in ("degradation", "drift_or_degradation"):
        quality = cycle.read(QUALITY)
        cycle.set_status(Status.NOT_DEGRADED, detail=quality.summary() if quality else None)
    else:
        cycle.set_status(Status.NO_DRIFT)


def train_stage(cycle: CycleRecord, windows: Windows | None = None) -> EvaluationResult:
    """k-fold evaluate the candidate (and the champion on the same unseen rows), then make the final candidate:
    a fit on the whole window or the fold models' ensemble (``training.final_model``); with ``training.search``,
    the candidate's parameters are searched on the same folds first."""
    import joblib

    from pipeline.evaluate import FoldPlan, compare_with_champion, fit_folds, probe_importance, review_scores
    from pipeline.train import final_candidate, resolve_device

    config = cycle.config
    windows = windows or cycle.require(WINDOWS)
    tuning = None

    def progress(message: str) -> None:
        cycle.progress(f"[train] {message}")

    with cycle.stage("train"):
        # The recorded scores follow the snapshot's row order; a cluster holds the rows in day partitions.
        champion = _champion_of(cycle, windows, with_scores=config.compute.engine == "local")
        if config.compute.engine == "dask":
            from pipeline.distributed import train_on_cluster

            if config.training.search.trials:
                raise ConfigError("training.search runs its trials in this process: set compute.engine 'local' "
                                  "or Tune (trials) 0")

            trained = train_on_cluster(config, cycle.url_of(snapshot_file("current")), windows.current.start,
                                       windows.current.end, champion, cycle.cycle_id, progress=progress)
            evaluation, compared, model, info = trained.evaluation, trained.compared, trained.model, trained.final_fit
            review = trained.review
        else:
            device = resolve_device(config)
            frame = cycle.frame("current")
            plan = FoldPlan.of(config, frame)
            folds = None
            if config.training.search.trials:
                from pipeline.search import with_training

                tuning = _tune(cycle, frame, device, plan, windows, progress)
                config, folds = with_training(config, params=tuning.params), tuning.folds
                cycle.write(SEARCH, tuning.summary)
            checkpoints = _checkpoints(cycle, config, windows.current.sha256, device)
            if folds is None:
                folds = fit_folds(config, frame, device, progress, plan=plan, checkpoints=checkpoints)
            else:
                progress(f"the chosen trial's {len(folds.folds)} folds are the candidate's k-fold")
                probe_importance(config, frame, folds)
                if config.training.final_model != "fold_ensemble":
                    folds.models = []
            evaluation, compared = compare_with_champion(config, frame, folds, champion)
            review = review_scores(config, frame, folds, champion, cycle.cycle_id)
            model, info = final_candidate(config, frame, folds.y, folds.models, device, progress, folds.encoded,
                                          checkpoints.of("final") if checkpoints else None)
            if info.resumed_rounds:
                progress(f"final fit resumed from its checkpoint at round {info.resumed_rounds}")
        evaluation.params = dict(config.training.params)
        evaluation.tuning = tuning.summary.describe() if tuning else None
        cycle.write(EARLIER_VERSIONS, review.earlier)
        if review.importance is not None:
            cycle.write(IMPORTANCE, review.importance)
        if compared is not None:
            with cycle.writing(COMPARED) as path:
                compared.to_parquet(path)
        with cycle.writing(CANDIDATE) as path:
            joblib.dump(model, path)
        cycle.write(EVALUATION, evaluation)
        cycle.log_evaluation(evaluation, info.best_iteration, info.seconds)
        if tuning is not None:
            cycle.log_search(tuning.summary)
    return evaluation


def _tune(cycle: CycleRecord, frame, device: str, plan, windows: Windows, progress):
    from pipeline.search import tune

    name, champion_window, warm = _search_of(cycle.config, cycle, windows)
    return tune(cycle.config, frame, device, plan, name, champion_window, warm, progress)


def _search_of(config: Config, cycle: CycleRecord, windows: Windows):
    """A cycle's study name, the champion's training window (whose rows the trials are scored on) and its
    (version, parameters) to warm-start from, where its version records them."""
    from pipeline.search import study_name

    champion_window, warm = None, None
    if windows.champion_version is not None:
        tags = VersionTags.of(registry.get_version(config, windows.champion_version))
        champion_window = tags.window
        warm = (windows.champion_version, tags.params) if tags.params and tags.window else None
    return study_name(config, cycle.cycle_id, windows.current.sha256, champion_window), champion_window, warm


def join_search(config: Config, cycle_id: str, worker: int, progress: Progress | None = None) -> int:
    """Run trials of a cycle's search from another process (``pipeline tune``), with the settings the cycle recorded
    (a trigger form's family, k and trials included); no lock: any number of processes share the study."""
    import yaml

    from pipeline.config import Evaluation, Training
    from pipeline.search import join
    from pipeline.train import resolve_device

    cycle = CycleRecord.find(config, cycle_id, ("retrain",), progress)
    recorded = yaml.safe_load(cycle.local_path(CONFIG_FILE).read_text(encoding="utf-8"))
    config = config.model_copy(update={"training": Training.model_validate(recorded["training"]),
                                       "evaluation": Evaluation.model_validate(recorded["evaluation"])})
    if not config.training.search.trials:
        raise PipelineError(f"cycle {cycle_id} runs no search (training.search.trials is 0)")
    name, champion_window, warm = _search_of(config, cycle, cycle.require(WINDOWS))
    return join(config, cycle.frame("current"), resolve_device(config), name, champion_window, worker, warm,
                progress or cycle.progress)


def _checkpoints(cycle: CycleRecord, config: Config, window_sha256: str, device: str):
    """The train stage's fit checkpoints, keyed by everything a fit depends on; None when they are off."""
    from pipeline.checkpoint import Checkpoints

    training, evaluation = config.training, config.evaluation
    if training.checkpoint_every_s is None:
        return None
    return Checkpoints(cycle.storage, training.checkpoint_every_s, {
        "family": training.family, "params": training.params, "seed": training.seed, "device": device,
        "early_stopping": [training.early_stopping_rounds, training.validation_fraction],
        "k": evaluation.k, "split": evaluation.split, "window": window_sha256})


def _scores_column(version: str, windows: Windows) -> str:
    """Whose scores on which rows: another champion or snapshots written again invalidate them."""
    return f"v{version}@{windows.snapshot_id}"


def _write_champion_scores(cycle: CycleRecord, champion, windows: Windows) -> None:
    import pandas as pd

    with cycle.writing(CHAMPION_SCORES) as path:
        pd.DataFrame({_scores_column(champion.version, windows): champion.window_scores}).to_parquet(path, index=False)


def _recorded_champion_scores(cycle: CycleRecord, windows: Windows):
    """The quality check's scores of the champion on the current window; None when it scored others or none."""
    import pyarrow.parquet as pq

    path = cycle.storage.fetch(CHAMPION_SCORES)
    column = _scores_column(windows.champion_version or "", windows)
    if path is None or pq.read_schema(path).names != [column]:
        return None
    return pq.read_table(path).column(0).to_numpy()


def _champion_of(cycle: CycleRecord, windows: Windows, with_scores: bool = False):
    """The champion the cycle started with, loaded, with its k-fold estimate of the primary metric if one is on record
    (and, ``with_scores``, the scores the quality check recorded)."""
    from pipeline.evaluate import Champion

    if windows.champion_version is None:
        return None
    config = cycle.config
    tags = VersionTags.of(registry.get_version(config, windows.champion_version))
    if tags.window is None:
        return None
    # An estimate of another metric (the config's primary metric changed since) promises nothing about this one.
    kfold_value = tags.candidate_mean if tags.primary_metric == config.primary_metric else None
    model = registry.load_model(config, windows.champion_version)
    scores = _recorded_champion_scores(cycle, windows) if with_scores else None
    return Champion(windows.champion_version, model, *tags.window, kfold_value=kfold_value, window_scores=scores)


def gate_stage(cycle: CycleRecord, evaluation: EvaluationResult | None = None) -> GateVerdict:
    """The gate's verdict on the candidate; a rejection ends the cycle with the champion untouched."""
    from pipeline.evidence import gather as gather_evidence
    from pipeline.gate import decide as gate_decide
    from pipeline.metrics import ComparedRows

    evaluation = evaluation or cycle.require(EVALUATION)
    with cycle.stage("gate"):
        compared = ComparedRows.read_parquet(cycle.local_path(COMPARED)) if evaluation.champion_version else None
        verdict = gate_decide(evaluation, cycle.config.gate, cycle.cycle_id, compared)
        cycle.write(GATE, verdict)
        cycle.log_gate(verdict)
        evidence = None if compared is None else gather_evidence(
            cycle.config.task, evaluation.primary_metric, evaluation.champion_version or "", compared,
            cycle.read(IMPORTANCE))
        if evidence is not None:
            cycle.write(EVIDENCE, evidence)
            cycle.log_evidence()
    if not verdict.passed:
        cycle.set_status(Status.GATE_REJECTED, detail="; ".join(verdict.failures))
    return verdict


def register_stage(
    cycle: CycleRecord, verdict: GateVerdict | None = None, windows: Windows | None = None,
    evaluation: EvaluationResult | None = None,
) -> registry.VersionInfo:
    """Register the gated candidate as ``challenger``; refuses anything without a passing verdict."""
    import joblib

    config = cycle.config
    verdict = verdict or cycle.require(GATE)
    if not verdict.passed:
        raise PromotionRefused(f"cycle {cycle.cycle_id} has no passing gate verdict; nothing to register")
    current = (windows or cycle.require(WINDOWS)).current
    evaluation = evaluation or cycle.require(EVALUATION)
    with cycle.stage("register"):
        model = joblib.load(cycle.local_path(CANDIDATE))
        example = cycle.head("current", 5)[config.source.features.all]
        # Integer columns in a signature reject missing values at serving time; the model takes floats.
        example = example.astype({column: "float64" for column in config.source.features.numeric})
        previous = registry.alias_version(config, registry.CHALLENGER)
        tags = VersionTags.of_candidate(cycle.cycle_id, verdict, current, evaluation, config.training.family)
        version = registry.register_candidate(
            config, cycle.run_id, model, example, tags, progress=lambda m: cycle.progress(f"[register] {m}"),
        )
        cycle.write(REGISTRATION, Registration(version.version))
    if previous is not None and previous.version != version.version:
        _supersede(config, previous, cycle)
    return version


def _supersede(config: Config, previous: registry.VersionInfo, by: CycleRecord) -> None:
    """The candidate that was waiting for a decision lost the challenger alias: its cycle is superseded."""
    cycle_id = VersionTags.of(previous).cycle_id
    if cycle_id is None or cycle_id == by.cycle_id:
        return
    with suppress(PipelineError), locks.cycle_lock(config, cycle_id, wait_s=5):
        waiting = CycleRecord.find(config, cycle_id)
        status = waiting.status()
        if status is not None and status.status == Status.AWAITING_APPROVAL:
            waiting.set_status(Status.SUPERSEDED, detail=f"cycle {by.cycle_id} registered a newer challenger")


def promote_stage(cycle: CycleRecord, approval: Approval | None) -> Decision | None:
    """Promote the registered challenger on an approval; without one it waits for a person.

    A decision already on record stands: a re-run neither asks again nor applies it again (not even
    when the champion has been rolled back since).
    """
    with cycle.stage("promote", restart=False):
        recorded = cycle.read(APPROVAL)
        if recorded is not None:
            settle(cycle, recorded)
            return recorded
        if approval is None:
            cycle.set_status(Status.AWAITING_APPROVAL)
            return None
        return decide(cycle, approval)


@contextmanager
def failures_recorded(cycle: CycleRecord) -> Iterator[None]:
    """A fault inside marks the cycle failed (where its status allows) and goes on up; a re-run starts it again."""
    try:
        yield
    except Exception as error:
        with suppress(Exception):  # the original fault matters more than failing to record it
            cycle.set_status(Status.FAILED, detail=f"{type(error).__name__}: {error}"[:2000])
        raise


def run_cycle(
    config: Config, as_of: date, cycle_id: str | None = None, until: str = "promote",
    trigger: Trigger | None = None, progress: Progress | None = None,
) -> CycleOutcome:
    """Run the stages up to and including ``until``, passing results in memory; verdicts end it with their status."""
    if until not in STAGES:
        raise PipelineError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    from pipeline.distributed import engine_session  # Dask itself only with compute.engine dask

    trigger = trigger or Trigger.cli()
    with open_cycle(config, as_of, cycle_id, trigger=trigger, progress=progress) as cycle:
        outcome = CycleOutcome(cycle, Status.RUNNING, trigger=trigger)
        with failures_recorded(cycle), engine_session(config):
            _run_stages(cycle, outcome, STAGES[: STAGES.index(until) + 1])
        status = cycle.require(STATUS)
        if status.status == Status.RUNNING:
            cycle.set_status(Status.PAUSED, detail=f"stopped after {until}")
            status = cycle.require(STATUS)
        outcome.status, outcome.detail = status.status, status.detail
        if outcome.version is not None:
            outcome.version = registry.get_version(cycle.config, outcome.version.version)
        return outcome


def _run_stages(cycle: CycleRecord, outcome: CycleOutcome, stages: tuple[str, ...]) -> None:
    """Run ``stages`` in order, filling ``outcome``; a verdict that ends the cycle sets its status and stops."""
    outcome.windows = load_stage(cycle)
    if "validate" in stages:
        outcome.validation = validate_stage(cycle, outcome.windows)
        if not outcome.validation.passed:
            return
    if "drift" in stages:
        outcome.drift = drift_stage(cycle)
    if "quality" in stages:
        outcome.quality = quality_stage(cycle, outcome.windows)
    if "train" in stages:
        outcome.evaluation = train_stage(cycle, outcome.windows)
    if "gate" in stages:
        outcome.verdict = gate_stage(cycle, outcome.evaluation)
        if not outcome.verdict.passed:
            return
    if "register" in stages:
        outcome.version = register_stage(cycle, outcome.verdict, outcome.windows, outcome.evaluation)
    if "promote" in stages:
        outcome.decision = promote_stage(cycle, auto_approval(cycle.config))
