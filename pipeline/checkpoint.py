"""Checkpoints of long fits: a killed train task resumes its fits where they stopped, and ends with the same models.

An XGBoost fit saves its booster and its early-stopping state to the cycle's run directory at
most every ``training.checkpoint_every_s`` seconds, and once more when it ends; a fit of the same
name and settings started again (a retried task) loads the finished model, or continues the
interrupted one from its last checkpoint for the rounds it had left. The early-stopping state
travels with the booster, so the resumed fit stops where the uninterrupted one would have.
XGBoost does not save its random state: an interrupted fit that samples rows or columns
(``subsample``, ``colsample_*`` below 1) would draw other samples after a resume, so it starts
over (the same model, no time saved); once finished, it is loaded like any other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from pipeline.storage import RunStorage

SAMPLING = ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode")


@dataclass
class Saved:
    """What a checkpoint holds: the booster so far, its rounds, and the early-stopping callback's state."""

    booster: Any
    rounds: int
    finished: bool
    early_stopping: dict[str, Any] | None


class FitCheckpoint:
    """One fit's checkpoint file; its key is the fit's settings and rows, so no other fit ever resumes from it."""

    def __init__(self, storage: RunStorage, name: str, key: str, every_s: float):
        self.storage, self.file, self.key, self.every_s = storage, f"checkpoint-{name}.json", key, every_s

    def load(self) -> Saved | None:
        import xgboost

        path = self.storage.fetch(self.file)
        if path is None:
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return None  # a torn write is impossible (files are replaced whole); anything else unreadable: start over
        if saved.get("key") != self.key:
            return None
        booster = xgboost.Booster()
        booster.load_model(bytearray(base64.b64decode(saved["booster"])))
        return Saved(booster, int(saved["rounds"]), bool(saved["finished"]), saved.get("early_stopping"))

    def save(self, booster, finished: bool, early_stopping: dict[str, Any] | None) -> None:
        content = {"key": self.key, "rounds": booster.num_boosted_rounds(), "finished": finished,
                   "early_stopping": early_stopping,
                   "booster": base64.b64encode(bytes(booster.save_raw("ubj"))).decode("ascii")}
        self.storage.write_bytes(self.file, json.dumps(content).encode("utf-8"))


class Checkpoints:
    """The checkpoints of one train stage: one file per fit name, under a key of what the fits depend on."""

    def __init__(self, storage: RunStorage, every_s: float, settings: dict[str, Any]):
        self.storage, self.every_s = storage, every_s
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def of(self, name: str) -> FitCheckpoint:
        return FitCheckpoint(self.storage, name, self.key, self.every_s)


def resumable(params: dict[str, Any]) -> bool:
    """Whether an XGBoost fit with these parameters resumes to the uninterrupted fit's model (see the module doc)."""
    return all(params.get(name) in (None, 1, 1.0) for name in SAMPLING)


def _early_stopping_state(callback) -> dict[str, Any]:
    return {"stopping_history": callback.stopping_history, "best_scores": callback.best_scores,
            "current_rounds": callback.current_rounds, "maximize": callback.maximize}


def fit_checkpointed(estimator, checkpoint: FitCheckpoint, X, y, eval_set) -> int:
    """``estimator.fit(X, y, eval_set=...)`` for an XGBoost estimator, resumed from and saved to ``checkpoint``;
    returns the rounds it resumed from (0: it started afresh)."""
    from xgboost.callback import EarlyStopping, TrainingCallback

    rounds = estimator.get_params()["n_estimators"] or 100  # XGBoost's own default when unset
    patience = estimator.get_params()["early_stopping_rounds"]
    early = EarlyStopping(rounds=patience, save_best=False) if patience and eval_set else None
    saved = checkpoint.load()
    if saved is not None and not saved.finished and not resumable(estimator.get_params()):
        saved = None  # a finished fit is its model whatever it sampled; an interrupted one that samples starts over
    if saved is not None and early is not None and saved.early_stopping is not None:
        for name, value in saved.early_stopping.items():
            setattr(early, name, value)
    every_s = checkpoint.every_s

    class Saving(TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.saved_at = time.monotonic()

        def after_iteration(self, model, epoch: int, evals_log) -> bool:
            if time.monotonic() - self.saved_at >= every_s:
                checkpoint.save(model, False, None if early is None else _early_stopping_state(early))
                self.saved_at = time.monotonic()
            return False

    # EarlyStopping first: the state saved after a round includes that round.
    callbacks = [c for c in (early, Saving()) if c is not None]
    left = 0 if saved is None else (0 if saved.finished else rounds - saved.rounds)
    estimator.set_params(callbacks=callbacks, early_stopping_rounds=None,
                         n_estimators=rounds if saved is None else left)
    try:
        estimator.fit(X, y, eval_set=eval_set, verbose=False, xgb_model=None if saved is None else saved.booster)
    finally:
        # The fitted estimator keeps its own settings, not this fit's callbacks (they hold files and are not data).
        estimator.set_params(callbacks=None, early_stopping_rounds=patience, n_estimators=rounds)
    checkpoint.save(estimator.get_booster(), True, None if early is None else _early_stopping_state(early))
    return 0 if saved is None else saved.rounds
