"""What each stage returns: plain data with no heavy imports.

The record stores these as JSON and reads them back; summaries, notifications and the
review pages show them. Keeping them here, apart from the stages that compute them,
means reading a stored result never imports Great Expectations, Evidently, scikit-learn
or XGBoost (seconds per process).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

CRITICAL = "critical"
WARNING = "warning"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------- load


@dataclass(frozen=True)
class WindowSnapshot:
    """One window as snapshotted: its days, its rows and a sha256 over every value."""

    name: str
    start: date
    end: date
    rows: int
    sha256: str
    first_day: date | None = None  # of its oldest row; None when it has none

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "start": self.start.isoformat(), "end": self.end.isoformat(),
                "first_day": self.first_day.isoformat() if self.first_day else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowSnapshot:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        first = fields.get("first_day")
        return cls(**{**fields, "start": date.fromisoformat(data["start"]), "end": date.fromisoformat(data["end"]),
                      "first_day": date.fromisoformat(first) if first else None})

    def label(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True)
class Windows:
    """The load stage's result: the current and the reference window, and the champion the cycle compares with."""

    current: WindowSnapshot
    reference: WindowSnapshot
    champion_version: str | None
    notes: list[str] = field(default_factory=list)
    # New each time the load stage writes the snapshots: what later stages derived from older ones (the champion's
    # recorded scores, by row position) is not reused, even where the rows are the same in another order.
    snapshot_id: str = ""

    def items(self) -> list[tuple[str, WindowSnapshot]]:
        return [("current", self.current), ("reference", self.reference)]

    def to_dict(self) -> dict[str, Any]:
        return {"windows": {name: snap.to_dict() for name, snap in self.items()},
                "champion_version": self.champion_version, "notes": self.notes, "snapshot_id": self.snapshot_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Windows:
        windows = data["windows"]
        return cls(WindowSnapshot.from_dict(windows["current"]), WindowSnapshot.from_dict(windows["reference"]),
                   data.get("champion_version"), list(data.get("notes", [])), data.get("snapshot_id", ""))


# ---------------------------------------------------------------------------- validate


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    kwargs: dict
    severity: str
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None  # percent of all rows in the window
    observed_value: object
    sample_values: list
    message: str


@dataclass
class ValidationResult:
    passed: bool
    rows: int
    outcomes: list[ExpectationOutcome]

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == CRITICAL]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == WARNING]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationResult:
        return cls(passed=data["passed"], rows=data["rows"],
                   outcomes=[ExpectationOutcome(**o) for o in data["outcomes"]])

    def verdict(self) -> str:
        return "PASSED" if self.passed else "STOPPED"

    def summary(self) -> str:
        head = (
            f"Validation {self.verdict()}: {plural(len(self.critical_failures), 'critical failure')}, "
            f"{plural(len(self.warnings), 'warning')} ({self.rows:,} rows, {plural(len(self.outcomes), 'expectation')})"
        )
        failed = [f"  [{o.severity}] {o.message}" for o in self.outcomes if not o.success]
        return "\n".join([head, *failed])


# ---------------------------------------------------------------------------- drift


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # "numeric" | "categorical"
    method: str | None  # the distance: "wasserstein" (numbers) or "jensenshannon" (categories)
    score: float | None  # the distance; None when it could not be computed
    threshold: float | None  # the distance's floor
    drifted: bool
    status: str  # "drifted" | "stable" | "degenerate" (not compared)
    note: str  # why a feature was not compared, or what is special about it; "" otherwise
    p_value: float | None = None  # of the two-sample test (Kolmogorov-Smirnov; chi-square)
    alpha: float | None = None  # the level it was tested at (drift.alpha over the features)

    @property
    def severity(self) -> float:
        """How far past its floor the distance is (>= 1 when drifted); a column emptied in one window is infinite."""
        if self.score is None:
            return math.inf if self.drifted else 0.0
        if not self.threshold:
            return math.inf if self.score > 0 else 0.0
        return self.score / self.threshold

    def describe(self) -> str:
        if self.status == "degenerate" or self.score is None:
            return f"{self.feature}: {self.note}"
        comparison = ">=" if self.score >= (self.threshold or 0.0) else "<"
        significance = ""
        if self.p_value is not None:
            p_text = "p < 1e-16" if self.p_value < 1e-16 else f"p={self.p_value:.2g}"
            verdict = "significant" if self.p_value < (self.alpha or 0.0) else "not significant"
            significance = f", {p_text}, {verdict} at {self.alpha:.2g}"
        note = f" ({self.note})" if self.note else ""
        return f"{self.feature}: {self.method} {self.score:.4g} {comparison} floor {self.threshold:g}{significance}{note}"


@dataclass
class DriftResult:
    features: list[FeatureDrift]  # in config order
    drifted_share: float  # drifted / non-degenerate features
    dataset_drift: bool
    share_threshold: float
    reference_rows: int
    current_rows: int
    sampled_reference_rows: int  # rows of Evidently's report; the verdict uses every row
    sampled_current_rows: int
    rule: str = "share"  # drift.dataset_rule: "any" | "share"
    alpha: float | None = None  # drift.alpha: the dataset's false-alarm rate
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None  # the verdict's computation

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def degenerate_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status == "degenerate"]

    def top_drifted(self, n: int | None = None) -> list[FeatureDrift]:
        """Drifted features, largest drift first (relative to each one's floor)."""
        ranked = sorted((f for f in self.features if f.drifted), key=lambda f: f.severity, reverse=True)
        return ranked[:n]

    def rule_text(self) -> str:
        if self.rule == "any":
            return "the dataset drifts when any feature drifts"
        return f"the dataset drifts when {self.share_threshold:.0%} of the compared features drift"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "features": [FeatureDrift(**f) for f in data["features"]]})

    def summary(self, top: int | None = None) -> str:
        """A few lines for logs and notifications; ``top`` limits the drifted features listed."""
        compared = len(self.features) - len(self.degenerate_features)
        verdict = "DETECTED" if self.dataset_drift else "NOT DETECTED"
        lines = [
            f"Dataset drift {verdict}: {len(self.drifted_features)} of {compared} compared features drifted "
            f"(share {self.drifted_share:.0%}; {self.rule_text()}); "
            f"rows compared: reference {self.reference_rows:,}, current {self.current_rows:,}"
        ]
        lines += [f"note: {note}" for note in self.notes]
        drifted = self.top_drifted()
        if drifted:
            lines.append("drifted, largest first:")
            lines += [f"  {f.describe()}" for f in drifted[:top]]
            if top is not None and len(drifted) > top:
                lines.append(f"  ... and {len(drifted) - top} more")
        if self.degenerate_features:
            lines.append("not compared:")
            lines += [f"  {f.describe()}" for f in self.degenerate_features]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- train (k-fold)


@dataclass
class FoldResult:
    fold: int
    train_rows: int
    test_rows: int
    metrics: dict[str, float]
    compare_rows: int = 0
    candidate_compare: float | None = None
    champion_compare: float | None = None


@dataclass
class EvaluationResult:
    task: str
    primary_metric: str
    split: str
    k: int
    rows: int
    folds: list[FoldResult]
    metric_means: dict[str, float]
    metric_stds: dict[str, float]
    champion_version: str | None = None
    champion_window: str | None = None
    device: str = "cpu"
    seconds: float = 0.0
    best_iterations: list[int | None] = field(default_factory=list)
    window_days: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the estimator's parameters: training.params, or the tuned
    tuning: str | None = None  # the search in one line (SearchSummary.describe), when training.search ran

    @property
    def primary_mean(self) -> float:
        return self.metric_means[self.primary_metric]

    @property
    def primary_std(self) -> float:
        return self.metric_stds[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        return cls(**{**data, "folds": [FoldResult(**f) for f in data["folds"]]})


# ---------------------------------------------------------------------------- search


@dataclass
class TrialRecord:
    """One trial of a search: its parameters, its objective after each fold it ran, and how it ended."""

    number: int
    state: str  # complete | pruned | failed
    params: dict[str, Any]
    fold_values: list[float]  # the primary metric of each fold it ran, on the fold's selection rows
    seconds: float | None
    role: str | None = None  # "training.params" (the fixed parameters) or "champion vN" (its parameters, a warm start)
    worker: str | None = None  # host:pid of the process that ran it
    trees: list[int] = field(default_factory=list)  # per fold, the trees early stopping kept (families that stop early)

    @property
    def value(self) -> float | None:
        """The objective: the mean over its folds (of the folds it ran, when pruned)."""
        return sum(self.fold_values) / len(self.fold_values) if self.fold_values else None


@dataclass
class SearchSummary:
    """A search's outcome: every finished trial, the one chosen, and what it was chosen on."""

    metric: str
    direction: str  # maximize | minimize
    trials: list[TrialRecord]
    best_number: int | None
    best_params: dict[str, Any]  # what the candidate trains with: training.params and the chosen trial's
    seconds: float
    selection_rows: int  # the held-out rows each trial was scored on (none the gate compares)
    study: str
    note: str | None = None  # why no search ran, when none did

    def count(self, state: str) -> int:
        return sum(trial.state == state for trial in self.trials)

    def trial(self, number: int | None) -> TrialRecord | None:
        return next((trial for trial in self.trials if trial.number == number), None)

    def describe(self) -> str:
        if self.best_number is None:
            return f"not tuned: {self.note}" if self.note else "not tuned"
        best, baseline = self.trial(self.best_number), next((t for t in self.trials if t.role == "training.params"), None)
        finished = self.count("complete") + self.count("pruned")
        tuned = {name: value for name, value in self.best_params.items() if best is not None and name in best.params}
        shown = ", ".join(f"{name}={_param(value)}" for name, value in sorted(tuned.items())) or "training.params"
        line = (f"tuned: {finished} trials ({self.count('pruned')} pruned), best params {shown} "
                f"(trial {self.best_number}), search took {self.seconds:.1f}s")
        if best is not None and baseline is not None and baseline.state == "complete" and best.value is not None:
            if best.number == baseline.number:
                line += f"; no trial beat training.params' {self.metric} {baseline.value:.4f}"
            else:
                line += (f"; k-fold {self.metric} on the selection rows {best.value:.4f} vs {baseline.value:.4f} "
                         "with training.params")
        return line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSummary:
        return cls(**{**data, "trials": [TrialRecord(**t) for t in data["trials"]]})


def _param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- gate


@dataclass
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class GateVerdict:
    verdict_id: str
    passed: bool
    checks: list[GateCheck]
    primary_metric: str
    candidate_mean: float
    candidate_std: float
    champion_version: str | None = None
    fold_candidate: list[float | None] = field(default_factory=list)
    fold_champion: list[float | None] = field(default_factory=list)
    fold_improvement: list[float] = field(default_factory=list)
    compare_rows: int = 0
    # The primary metric of each model on the compared rows pooled: the champion's realised score on rows it never saw.
    candidate_compare: float | None = None
    champion_compare: float | None = None
    test: str = "blocked"
    blocks: int | None = None  # time blocks of the blocked test
    # The blocked test's second look, at the compared rows of the window's newest days.
    recent_rows: int | None = None
    recent_improvement: float | None = None
    recent_p_value: float | None = None
    # Relative error reduction (error = the metric for losses, 1 - the metric for scores), its one-sided
    # lower confidence bound at 1 - alpha, which must exceed `margin`, and the power to detect `detectable`.
    improvement: float | None = None
    improvement_lower: float | None = None
    margin: float = 0.0
    detectable: float | None = None
    power: float | None = None
    rows_for_power: int | None = None
    t_statistic: float | None = None
    p_value: float | None = None
    alpha: float = 0.05

    @property
    def reasons(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]

    @property
    def failures(self) -> list[str]:
        return [reason for check, reason in zip(self.checks, self.reasons, strict=True) if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateVerdict:
        return cls(**{**data, "checks": [GateCheck(**c) for c in data["checks"]]})


# ---------------------------------------------------------------------------- quality (monitoring)


@dataclass(frozen=True)
class ModelQuality:
    """The champion's primary metric on the labelled rows it never trained on, against its k-fold estimate.

    ``degradation`` is relative, in error (the metric for losses, 1 - the metric for scores): 0.3 is
    30 % more error than the k-fold estimate promised. ``degraded``: its one-sided lower confidence
    bound lies above ``margin`` (p < alpha). Without a champion, or with too few live rows, the
    check is not judged and ``reason`` says why.
    """

    primary_metric: str
    champion_version: str | None
    judged: bool
    degraded: bool
    reason: str
    rows: int = 0
    needed_rows: int = 0
    live_start: date | None = None  # the first and last day of the rows scored
    live_end: date | None = None
    live_value: float | None = None
    kfold_value: float | None = None
    degradation: float | None = None
    degradation_lower: float | None = None
    p_value: float | None = None
    margin: float = 0.0
    alpha: float = 0.0
    blocks: int | None = None

    @property
    def verdict(self) -> str:
        if self.champion_version is None:
            return "no_champion"
        if not self.judged:
            return "not_judged"
        return "degraded" if self.degraded else "healthy"

    def to_dict(self) -> dict[str, Any]:
        days = {name: getattr(self, name) for name in ("live_start", "live_end")}
        return {**asdict(self), **{name: day.isoformat() if day else None for name, day in days.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelQuality:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        days = {name: date.fromisoformat(fields[name]) if fields.get(name) else None for name in ("live_start", "live_end")}
        return cls(**{**fields, **days})

    def summary(self) -> str:
        if self.champion_version is None:
            return f"Quality {self.reason}"
        head = {"not_judged": "not judged", "degraded": "DEGRADED", "healthy": "healthy"}[self.verdict]
        return f"Quality champion v{self.champion_version} {head}: {self.reason}"


# ---------------------------------------------------------------------------- the evidence (pipeline/evidence.py)


@dataclass(frozen=True)
class Binned:
    """One bin of a model's predictions (equal row counts): its mean prediction, and the truth's mean or the
    residual's mean in it."""

    predicted: float
    observed: float
    rows: int


@dataclass(frozen=True)
class ModelEvidence:
    metrics: dict[str, float]
    by_time: list[float]  # the primary metric in each time bucket
    bins: list[Binned]  # reliability (classification: observed positive rate) or residuals (regression: mean residual)
    confusion: list[list[int]] | None = None  # [[true negatives, false positives], [false negatives, true positives]]


@dataclass(frozen=True)
class TimeBucket:
    start: str
    end: str
    rows: int


IMPORTANCE_CHANGES_SHOWN = 8  # features a reviewer is shown: those whose importance moved most


@dataclass(frozen=True)
class ImportanceOf:
    feature: str
    candidate: float  # how much worse the metric gets with the feature shuffled
    champion: float


@dataclass(frozen=True)
class FeatureImportance:
    """Both models' permutation importances on the same rows neither trained on (``pipeline.importance``)."""

    method: str
    metric: str
    rows: int
    features: list[ImportanceOf]

    def top_changes(self, count: int = IMPORTANCE_CHANGES_SHOWN) -> list[ImportanceOf]:
        """The features whose importance moved most from the champion to the candidate."""
        return sorted(self.features, key=lambda f: -abs(f.candidate - f.champion))[:count]

    def rank(self, feature: str, model: str) -> int:
        """1 for the model's most important feature."""
        order = sorted(self.features, key=lambda f: -getattr(f, model))
        return next(i for i, f in enumerate(order, 1) if f.feature == feature)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureImportance:
        return cls(**{**data, "features": [ImportanceOf(**f) for f in data["features"]]})


@dataclass(frozen=True)
class Evidence:
    task: str
    primary_metric: str
    rows: int
    champion_version: str
    candidate: ModelEvidence
    champion: ModelEvidence
    buckets: list[TimeBucket]
    # Between the two models' predictions on these rows: the Wasserstein distance in standard deviations of the
    # champion's predictions, and (classification) the share of rows whose predicted class differs.
    prediction_shift: float
    class_flips: float | None = None
    threshold: float | None = None
    importance: FeatureImportance | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        def model(raw: dict[str, Any]) -> ModelEvidence:
            return ModelEvidence(**{**raw, "bins": [Binned(**b) for b in raw["bins"]]})

        importance = data.get("importance")
        return cls(**{**data, "candidate": model(data["candidate"]), "champion": model(data["champion"]),
                      "buckets": [TimeBucket(**b) for b in data["buckets"]],
                      "importance": None if importance is None else FeatureImportance.from_dict(importance)})


@dataclass(frozen=True)
class VersionOnRows:
    """An earlier version and the candidate on the compared rows that version never trained on either."""

    version: str
    role: str  # "previous champion" | "earlier version"
    rows: int
    version_value: float | None = None  # the primary metric; None when it could not be scored (``note`` says why)
    candidate_value: float | None = None
    note: str = ""


@dataclass(frozen=True)
class EarlierVersions:
    """The previous champion and the newest other versions, each scored beside the candidate (train stage)."""

    primary_metric: str
    versions: list[VersionOnRows]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarlierVersions:
        return cls(data["primary_metric"], [VersionOnRows(**v) for v in data["versions"]])
