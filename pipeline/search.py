"""Hyperparameter search inside the cycle's k-fold (``training.search``), on an Optuna study in the pipeline's database.

Every trial runs the candidate's own k-fold (the same folds, on one ``FoldPlan``) with the fixed
``training.params`` overlaid by the parameters it samples, and is scored on the held-out rows the
gate will **not** compare: the rows inside the champion's training window (every held-out row when
there is no champion). The gate's paired comparison runs on the other rows, which no trial was
chosen on, so picking the best of many trials biases nothing the gate decides on. After each fold
the trial reports its running mean to Optuna, whose pruner stops a trial that is clearly behind.

The study lives in ``promotion.database_url`` (Optuna's RDB storage), named by the model, the
cycle and a digest of what the trials depend on: a re-run of the cycle's train task resumes the
study (finished trials stand), and any number of processes (``pipeline tune``) may run trials of
one study at once; the budget counts the study's finished trials, wherever they ran. Within a
process, ``training.search.parallel`` trials run at once on threads (XGBoost and scikit-learn's
tree fits release the GIL), each fit with its share of ``training.threads``: on a small window
two single-threaded fits side by side do more than one fit on two threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.config import Config, ParamRange
from pipeline.errors import PipelineError
from pipeline.evaluate import CandidateFolds, Champion, FoldPlan, fit_folds, unseen_by_champion
from pipeline.metrics import HIGHER_IS_BETTER, metric_value
from pipeline.results import SearchSummary, TrialRecord
from pipeline.train import FitInfo, resolve_threads

BASELINE = "training.params"
# The median of fewer finished trials is one trial's luck, not a bar worth stopping a trial at.
PRUNER_STARTUP_TRIALS = 3
# Successive halving: a trial goes on past fold 1, and past fold 3, only among the best third of the trials there.
HALVING = 3
# A trial whose process died stops counting as running after this long without a heartbeat (Optuna marks it failed).
HEARTBEAT_S, GRACE_S = 10, 60
# auto runs at most this many trials at once: each holds its fold models, and the first trials of a run start together,
# before any has finished a fold to be pruned against.
MAX_AUTO_PARALLEL = 4
# Below this share of the held-out rows the gate would compare nearly all of them: a search there would choose on them.
MIN_SELECTION_SHARE = 0.5


@dataclass
class Tuned:
    """A search's result: the parameters to train with, the chosen trial's folds when it ran here, and its summary."""

    params: dict[str, Any]
    folds: CandidateFolds | None
    summary: SearchSummary


def with_training(config: Config, **settings: Any) -> Config:
    """``config`` with these ``training`` settings (params, threads) in place of its own."""
    return config.model_copy(update={"training": config.training.model_copy(update=settings)})


def parallel_trials(config: Config, device: str) -> int:
    """Trials at once in this process: ``training.search.parallel``, or with auto one per fit thread (at most
    MAX_AUTO_PARALLEL), and one on a GPU, where concurrent trials would only queue for the device."""
    parallel = config.training.search.parallel
    if parallel != "auto":
        return parallel
    return 1 if device == "cuda" else min(resolve_threads(config), MAX_AUTO_PARALLEL)


def selection_rows(config: Config, frame: pd.DataFrame, plan: FoldPlan, champion_window) -> np.ndarray:
    """The held-out rows a trial is scored on: every one the gate will not compare (inside the champion's window)."""
    held_out = plan.fold > 0
    if champion_window is None:
        return held_out
    return held_out & ~unseen_by_champion(config, frame, Champion("", None, *champion_window))


def study_name(config: Config, cycle_id: str, window_sha256: str, champion_window) -> str:
    """The study of this cycle and of what its trials depend on: another family, space or window starts another."""
    training, evaluation = config.training, config.evaluation
    depends = {"family": training.family, "params": training.params, "seed": training.seed,
               "space": {name: spec.model_dump() for name, spec in training.search.space(training.family).items()},
               "early_stopping": [training.early_stopping_rounds, training.validation_fraction],
               "k": evaluation.k, "split": evaluation.split, "metric": config.primary_metric,
               "sampler": [training.search.sampler, training.search.pruner],
               "window": window_sha256, "champion_window": [str(day) for day in champion_window or ()]}
    digest = hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{config.model_name}/{cycle_id}/{digest}"


def _suggest(trial, name: str, spec: ParamRange) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    assert spec.low is not None and spec.high is not None
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)


def _in_space(params: dict[str, Any], space: dict[str, ParamRange]) -> dict[str, Any]:
    """The parameters a trial of ``space`` can take as they are (a warm start): named there and inside its range."""
    inside = {}
    for name, value in params.items():
        spec = space.get(name)
        if spec is None:
            continue
        if spec.type == "categorical" and value in (spec.choices or []):
            inside[name] = value
        elif (spec.type != "categorical" and isinstance(value, int | float) and spec.low is not None
              and spec.high is not None and spec.low <= value <= spec.high):
            inside[name] = int(value) if spec.type == "int" else float(value)
    return inside


def _storage(config: Config):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(config.promotion.database_url, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)


def open_study(config: Config, name: str, worker: int = 0, champion: tuple[str, dict[str, Any]] | None = None):
    """The study, created on first use with its warm start queued: the fixed parameters, then the champion's
    (version, parameters) where they differ. Its sampler is seeded by the seed, the trials so far and the worker,
    so a resumed or parallel search does not draw the same parameters again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = config.training.search
    direction: Literal["maximize", "minimize"] = "maximize" if HIGHER_IS_BETTER[config.primary_metric] else "minimize"
    storage = _storage(config)
    try:
        done = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    except KeyError:  # a new study
        done = 0
    seed = int(np.random.SeedSequence([config.training.seed, done, worker]).generate_state(1)[0])
    sampler = (optuna.samplers.TPESampler(seed=seed) if search.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    pruner = {"halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=HALVING),
              "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
              "none": optuna.pruners.NopPruner}[search.pruner]()
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if not study.trials:
        # skip_if_exists: a process that opened the new study at the same moment queued the same trials.
        study.enqueue_trial({}, user_attrs={"role": BASELINE}, skip_if_exists=True)
        if champion is not None:
            version, params = champion
            warm = _in_space(params, search.space(config.training.family))
            if warm and params != config.training.params:
                study.enqueue_trial(warm, user_attrs={"role": f"champion v{version}"}, skip_if_exists=True)
    return study


def finished_trials(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class Objective:
    """One trial: the k-fold with its parameters, scored on the selection rows, reported fold by fold."""

    def __init__(self, config: Config, frame: pd.DataFrame, device: str, plan: FoldPlan, selection: np.ndarray,
                 progress: Callable[[str], None]):
        self.config, self.frame, self.device, self.plan, self.selection = config, frame, device, plan, selection
        self.space = config.training.search.space(config.training.family)
        self.progress = progress
        # The best finished trial of this process, with its fold models: the candidate's k-fold when it wins.
        self.best: tuple[int, float, CandidateFolds] | None = None
        self._best_lock = threading.Lock()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, trial) -> float:
        import optuna

        trial.set_user_attr("worker", self.worker)
        params = dict(self.config.training.params)
        if trial.user_attrs.get("role") != BASELINE:
            params |= {name: _suggest(trial, name, spec) for name, spec in self.space.items()}
        metric, y, running, trees = self.config.primary_metric, self.plan.y, [], []

        def report(number: int, test_idx: np.ndarray, scores: np.ndarray, fit: FitInfo) -> None:
            chosen = self.selection[test_idx]
            running.append(metric_value(metric, y[test_idx][chosen], scores[chosen]))
            if fit.best_iteration is not None:
                trees.append(fit.best_iteration + 1)
                trial.set_user_attr("trees", trees)
            trial.report(float(np.mean(running)), number)
            # After the last fold there is nothing left to save: the trial is complete.
            if number < len(self.plan.splits) and trial.should_prune():
                self.progress(f"trial {trial.number}: pruned after fold {number} "
                              f"({metric} {np.mean(running):.4f} so far)")
                raise optuna.TrialPruned()

        folds = fit_folds(with_training(self.config, params=params), self.frame, self.device, plan=self.plan,
                          after_fold=report, keep_models=True, probe=False)
        value = float(np.mean(running))
        self.progress(f"trial {trial.number}: {metric} {value:.4f} over {len(running)} folds")
        better = HIGHER_IS_BETTER[metric]
        with self._best_lock:
            if self.best is None or (value > self.best[1] if better else value < self.best[1]):
                self.best = (trial.number, value, folds)
        return value


def _trial_record(trial, fixed: dict[str, Any]) -> TrialRecord:
    """A finished trial as recorded; ``fixed``: training.params, which the baseline trial ran with."""
    from optuna.trial import TrialState

    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(trial.state, "failed")
    # Each report is the running mean after a fold: the fold's own value is what it added to the sum.
    means = [float(trial.intermediate_values[step]) for step in sorted(trial.intermediate_values)]
    folds = [number * mean - (number - 1) * before
             for number, (mean, before) in enumerate(zip(means, [0.0, *means][:len(means)], strict=True), 1)]
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    role = trial.user_attrs.get("role")
    params = dict(fixed) if role == BASELINE else dict(trial.params)
    return TrialRecord(trial.number, state, params, folds, seconds, role, trial.user_attrs.get("worker"),
                       trial.user_attrs.get("trees", []))


def run_trials(config: Config, frame: pd.DataFrame, device: str, plan: FoldPlan, selection: np.ndarray, study,
               progress: Callable[[str], None]) -> Objective:
    """Run trials of ``study``, ``parallel_trials`` at once sharing the fit threads, until it has
    ``training.search.trials`` finished ones (or the timeout passes)."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from threadpoolctl import threadpool_limits

    search = config.training.search
    parallel = parallel_trials(config, device)
    threads = max(1, resolve_threads(config) // parallel)
    objective = Objective(with_training(config, threads=threads), frame, device, plan, selection, progress)
    trials = search.trials - finished_trials(study)
    if trials <= 0:
        return objective
    # One ask at a time: SQLite has no SELECT ... FOR UPDATE, so two threads asking at once could both take the same
    # queued trial (the warm start).
    asking, ask = threading.Lock(), study.ask

    def ask_alone(*args, **kwargs):
        with asking:
            return ask(*args, **kwargs)

    study.ask = ask_alone
    # Each fit sets this limit too: concurrent fits that each restored their own would leave it at a trial's share.
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna's experimental heartbeat, named at every trial
        # n_trials: this process's share; the callback: the study's budget, met sooner where other processes run.
        study.optimize(objective, n_trials=trials, timeout=search.timeout_s, n_jobs=parallel, gc_after_trial=False,
                       callbacks=[MaxTrialsCallback(search.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))])
    return objective


def tune(config: Config, frame: pd.DataFrame, device: str, plan: FoldPlan, name: str, champion_window=None,
         champion: tuple[str, dict[str, Any]] | None = None, progress: Callable[[str], None] | None = None) -> Tuned:
    """Search ``training.search``'s space on the cycle's folds; warm-started from the fixed parameters and, when
    given, the champion's (version, parameters)."""
    progress = progress or (lambda message: None)
    started = time.perf_counter()
    metric, search = config.primary_metric, config.training.search
    direction = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"
    selection = selection_rows(config, frame, plan, champion_window)
    held_out = int((plan.fold > 0).sum())
    if selection.sum() < MIN_SELECTION_SHARE * held_out:
        note = (f"only {int(selection.sum()):,} of the {held_out:,} held-out rows lie in the champion's training "
                "window; the gate compares the others, and a search scored on them would choose on its evidence")
        progress(f"search skipped: {note}")
        summary = SearchSummary(metric, direction, [], None, dict(config.training.params), 0.0, int(selection.sum()),
                                name, note)
        return Tuned(dict(config.training.params), None, summary)
    study = open_study(config, name, champion=champion)
    progress(f"search: {search.trials} trials of {len(search.space(config.training.family))} parameters, "
             f"scored on {int(selection.sum()):,} held-out rows the gate does not compare (study {name})")
    objective = run_trials(config, frame, device, plan, selection, study, progress)
    records = [_trial_record(t, config.training.params) for t in study.get_trials(deepcopy=False)
               if t.state.is_finished()]
    complete = [r for r in records if r.state == "complete"]
    if not complete:
        raise PipelineError(f"search study {name} finished no trial within training.search.timeout_s "
                            f"{search.timeout_s}: raise it, or lower the trials")
    best = study.best_trial
    params = dict(config.training.params) | (dict(best.params) if best.user_attrs.get("role") != BASELINE else {})
    folds = objective.best[2] if objective.best is not None and objective.best[0] == best.number else None
    if folds is not None:
        _fit_threads_back(config, folds)
    summary = SearchSummary(metric, direction, records, best.number, params, time.perf_counter() - started,
                            int(selection.sum()), name)
    progress(summary.describe())
    return Tuned(params, folds, summary)


def _fit_threads_back(config: Config, folds: CandidateFolds) -> None:
    """The chosen trial's fold models, fitted on a trial's share of the threads, score (and as a fold ensemble
    serve) with every fit thread again."""
    threads = resolve_threads(config)
    for model in folds.models:
        if model[-1].get_params().get("n_jobs") is not None:
            model[-1].set_params(n_jobs=threads)


def join(config: Config, frame: pd.DataFrame, device: str, name: str, champion_window, worker: int,
         champion: tuple[str, dict[str, Any]] | None = None, progress: Callable[[str], None] | None = None) -> int:
    """Run trials of a cycle's study from another process until its budget is met; returns how many ran here."""
    plan = FoldPlan.of(config, frame)
    selection = selection_rows(config, frame, plan, champion_window)
    study = open_study(config, name, worker, champion)
    before = len(study.trials)
    objective = run_trials(config, frame, device, plan, selection, study, progress or (lambda message: None))
    return sum(t.user_attrs.get("worker") == objective.worker for t in study.get_trials(deepcopy=False)[before:])
