"""The pipeline's one configuration file: YAML validated with pydantic.

URIs and secrets may be overridden from the environment (``PIPELINE_*``), so a
config file committed to a repository never has to carry them.
"""

from __future__ import annotations

import logging
import math
import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.families import FAMILIES

Task = Literal["classification", "regression"]
Metric = Literal["roc_auc", "log_loss", "f1", "rmse", "mae", "r2"]
Device = Literal["auto", "cpu", "cuda"]
FinalModel = Literal["refit", "fold_ensemble"]
# Estimator parameters that set a thread count: training.threads sets them all, so none may be set twice.
THREAD_PARAMS = ("n_jobs", "nthread")
Severity = Literal["critical", "warning"]
RetrainOn = Literal["always", "drift", "degradation", "drift_or_degradation"]
Reader = Literal["auto", "arrow", "sqlalchemy"]

CLASSIFICATION_METRICS: tuple[Metric, ...] = ("roc_auc", "log_loss", "f1")
REGRESSION_METRICS: tuple[Metric, ...] = ("rmse", "mae", "r2")

log = logging.getLogger(__name__)

CONFIG_ENV = "PIPELINE_CONFIG"
DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"

# Environment variables that override a config value; URIs and secrets belong there, not in files.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "PIPELINE_SOURCE_URL": ("source", "url"),
    "PIPELINE_TRACKING_URI": ("registry", "tracking_uri"),
    "PIPELINE_ARTIFACT_ROOT": ("registry", "artifact_root"),
    "PIPELINE_DATABASE_URL": ("promotion", "database_url"),
    "PIPELINE_STORAGE_ROOT": ("storage", "root"),
    "PIPELINE_MLFLOW_UI_URL": ("registry", "ui_url"),
    "PIPELINE_DASK_SCHEDULER_ADDRESS": ("compute", "dask", "scheduler_address"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Features(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @model_validator(mode="after")
    def _disjoint_and_present(self) -> Features:
        if not self.all:
            raise ValueError("at least one numeric or categorical feature is required")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"features listed as both numeric and categorical: {sorted(both)}")
        return self


class Source(_Strict):
    url: str = Field(description="SQLAlchemy URL of the data source (override: PIPELINE_SOURCE_URL).")
    connection_id: str | None = Field(
        default=None, description="Airflow Connection of the data source; under Airflow it wins over `url` when it exists."
    )
    table: str | None = None
    query: str | None = Field(default=None, description="A SELECT used instead of `table`.")
    timestamp_column: str
    target_column: str
    key_column: str | None = Field(default=None, description="Rows must be unique on (key, timestamp) when set.")
    features: Features
    unexpected_columns: Severity = Field(
        default="warning", description="Severity of columns present in the data but not in the schema."
    )
    read_chunk_rows: int = Field(default=200_000, gt=0, description="Rows per batch read from the source.")
    reader: Reader = Field(
        default="auto",
        description="How windows are read: `arrow` (ADBC, SQLite and PostgreSQL), `sqlalchemy`, or `auto`: Arrow where "
        "the URL's dialect has a driver, SQLAlchemy otherwise and whenever Arrow cannot read the window as SQLAlchemy does.",
    )

    @model_validator(mode="after")
    def _table_or_query(self) -> Source:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        return self

    @property
    def schema_columns(self) -> list[str]:
        cols = [self.timestamp_column, *self.features.all, self.target_column]
        if self.key_column:
            cols.insert(0, self.key_column)
        return cols


class Windows(_Strict):
    current_days: int = Field(default=28, gt=0, description="Trailing days up to and including the as-of date.")
    initial_reference_days: int = Field(
        default=28, gt=0, description="With no champion yet, the reference is this many days just before the current window."
    )
    initial_reference_start: date | None = Field(
        default=None, description="Fixed start of the first reference window instead of the days just before."
    )
    min_rows: int = Field(default=500, ge=1, description="A window with fewer rows stops the cycle.")
    future_tolerance_days: int = Field(
        default=1, ge=0,
        description="Rows dated more than this many days after today are future-dated: `--as-of latest` ignores "
                    "them and validation reports them (clocks and time zones put honest rows a little ahead).",
    )


class Validation(_Strict):
    suite: Path = Field(description="Expectation suite JSON (relative paths resolve against the config file).")
    non_finite: Severity = Field(
        default="critical",
        description="Severity of ±inf, or a number beyond the largest 32-bit float, in a numeric feature or the target; "
                    "as a warning the window goes on to a training that fails on it.",
    )
    future_rows: Severity = Field(
        default="warning", description="Severity of rows dated after today plus windows.future_tolerance_days."
    )


class FeatureDrift(_Strict):
    floor: float | None = Field(default=None, ge=0, description="This feature's distance floor; None: its kind's.")


class Drift(_Strict):
    """When a feature, and the dataset, drift (pipeline/drift.py): a significant shift at least a floor large."""

    alpha: float = Field(
        default=0.01, gt=0, lt=1,
        description="Chance that two windows of one distribution raise a dataset alarm; each feature is tested "
                    "at alpha / features (Bonferroni).",
    )
    numeric_floor: float = Field(
        default=0.1, ge=0, description="Wasserstein distance, in reference standard deviations, a numeric drift must reach."
    )
    categorical_floor: float = Field(
        default=0.05, ge=0, le=1,
        description="Jensen-Shannon distance (base 2, 0..1) a categorical drift must reach: +10 points of one "
                    "category scores 0.085-0.12, a new category of 1 % 0.07, +5 points 0.04.",
    )
    dataset_rule: Literal["any", "share"] = Field(
        default="any", description="any: one drifted feature is dataset drift; share: dataset_drift_share of them."
    )
    dataset_drift_share: float = Field(default=0.3, gt=0, le=1, description="The share rule's share of features.")
    reference: Literal["champion_window", "previous_window", "same_period_last_year"] = Field(
        default="champion_window",
        description="What the current window is compared with: the champion's training window, the window just "
                    "before the current one, or the current window 52 weeks earlier (seasonal data; the champion's "
                    "window while the history is shorter).",
    )
    per_feature: dict[str, FeatureDrift] = Field(default_factory=dict)
    sample_rows: int | None = Field(
        default=20_000, gt=0,
        description="Rows of each window in Evidently's report (None: all); the verdict uses every row. The report's "
                    "cost is mostly its plots, per feature: more rows redraw the same histograms.",
    )
    top_features: int = Field(default=5, gt=0)


ParamValue = float | int | str | bool


class ParamRange(_Strict):
    """One tuned parameter: numbers from ``low`` to ``high`` (``int`` or ``float``; ``log``: sampled on a log scale,
    ``step``: on a grid), or one of ``choices`` (``categorical``)."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[ParamValue] | None = None

    @model_validator(mode="after")
    def _a_range_or_choices(self) -> ParamRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("a categorical parameter takes `choices` only (no low, high, log or step)")
            return self
        if self.choices is not None:
            raise ValueError(f"an {self.type} parameter takes low and high, not `choices` (use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs `low` and `high`")
        if not self.low < self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range must start above 0 (low is {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("a range is either log-scaled or stepped, not both")
        if self.type == "int" and not all(float(bound).is_integer() for bound in (self.low, self.high, self.step or 1)):
            raise ValueError(f"an int parameter needs whole low, high and step (got {self.low:g}, {self.high:g}, "
                             f"{self.step or 1:g})")
        return self


class Search(_Strict):
    """Hyperparameter search inside the cycle's k-fold (pipeline/search.py); off while ``trials`` is 0."""

    trials: int = Field(default=0, ge=0, description="Trials per cycle (the fixed training.params is the first); 0: off.")
    timeout_s: float | None = Field(default=None, gt=0, description="Stop starting trials after this many seconds.")
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="Optuna's sampler, seeded by training.seed.")
    pruner: Literal["halving", "median", "none"] = Field(
        default="halving",
        description="halving (successive halving): a trial goes on past fold 1, and past fold 3, only while its "
                    "running k-fold mean is among the best third of the trials' there; median: it stops after a "
                    "fold where it is worse than the median of earlier trials'; none: every trial runs all k folds.",
    )
    parallel: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default="auto",
        description="Trials at once in this process (threads), each fit with training.threads divided among them; "
                    "auto: one per fit thread, at most 4, and one on a GPU. 1: the trials a seed draws repeat exactly.",
    )
    spaces: dict[str, dict[str, ParamRange]] = Field(
        default_factory=dict,
        description="Per family, the parameters searched and their ranges; a family not named here searches its "
                    "default space (pipeline/families.py).",
    )

    @field_validator("spaces")
    @classmethod
    def _known_parameters(cls, spaces: dict[str, dict[str, ParamRange]]) -> dict[str, dict[str, ParamRange]]:
        for family, space in spaces.items():
            if family not in FAMILIES:
                raise ValueError(f"spaces names {family!r}, which is not one of {', '.join(FAMILIES)}")
            unknown = sorted(set(space) - set(FAMILIES[family].tunable))
            if unknown:
                raise ValueError(f"spaces.{family} names {unknown}, which {family} cannot tune; its tunable "
                                 f"parameters: {', '.join(FAMILIES[family].tunable)}")
            if not space:
                raise ValueError(f"spaces.{family} is empty: name at least one parameter, or leave the family out")
        return spaces

    def space(self, family: str) -> dict[str, ParamRange]:
        """The parameters searched for ``family``: the config's space for it, else the family's default."""
        if family in self.spaces:
            return self.spaces[family]
        return {name: ParamRange.model_validate(spec) for name, spec in FAMILIES[family].default_space.items()}


class Training(_Strict):
    family: str = Field(default="xgboost", description=f"One of {', '.join(FAMILIES)} (pipeline/families.py).")
    device: Device = "auto"
    params: dict[str, ParamValue] = Field(default_factory=dict, description="Passed to the estimator.")
    early_stopping_rounds: int | None = Field(default=20, gt=0)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    threads: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default="auto",
        description="Threads of each fit (the estimator's n_jobs, and BLAS/OpenMP around it); auto: the CPUs this "
                    "process may use (its affinity and cgroup quota).",
    )
    final_model: FinalModel = Field(
        default="refit",
        description="refit: after the k folds, one more fit on the whole window; fold_ensemble: no refit, the "
                    "k fold models averaged are the candidate.",
    )
    seed: int = 42
    search: Search = Search()
    checkpoint_every_s: float | None = Field(
        default=60, gt=0,
        description="A family that checkpoints (xgboost) saves a fit's progress to the cycle's run directory this "
                    "often, so a killed train task resumes the fit; None: no checkpoints.",
    )
    queue: str | None = Field(
        default=None, description="Airflow/Celery queue for the train task (e.g. `gpu`); None: the default queue."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_n_jobs(cls, data: object) -> object:
        if isinstance(data, dict) and "n_jobs" in data:
            raise ValueError("training.n_jobs was renamed training.threads (auto or a number)")
        return data

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"{family!r} is not one of {', '.join(FAMILIES)} (pipeline/families.py)")
        return family

    @field_validator("params")
    @classmethod
    def _threads_set_once(cls, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        for name in THREAD_PARAMS:
            if name in params:
                raise ValueError(f"{name!r} sets a thread count: use training.threads (auto or a number), "
                                 "which also limits BLAS/OpenMP threads around the fit")
        return params


class Evaluation(_Strict):
    k: int = Field(default=5, ge=2)
    split: Literal["days", "stratified", "kfold", "time"] = Field(
        default="stratified", description="days: whole calendar days per fold (stratified for classification); "
                                    "stratified/kfold: rows shuffled; time: train on the past, test on what follows.",
    )
    primary_metric: Metric | None = None
    importance_rows: int = Field(
        default=5000, ge=0,
        description="Held-out rows (a seeded sample) the permutation importance of candidate and champion is measured "
                    "on, for the reviewer; each model scores this many rows per feature. 0: not measured.",
    )


class Gate(_Strict):
    """What a candidate must show; every default is relative (to the metric or the window), so it fits any data."""

    floors: dict[str, float] = Field(
        default_factory=dict,
        description="Worst acceptable k-fold mean per metric: a minimum for AUC/F1/R², a maximum for log-loss/RMSE/MAE.",
    )
    max_fold_spread: float | None = Field(
        default=0.25, ge=0,
        description="Ceiling on the primary metric's fold-to-fold std as a share of its error "
                    "(the metric for losses, 1 - the metric for scores).",
    )
    max_fold_std: float | None = Field(
        default=None, ge=0, description="Ceiling on the fold-to-fold std in the metric's own units (opt-in)."
    )
    test: Literal["blocked", "corrected_t"] = Field(
        default="blocked",
        description="blocked: jackknife over time blocks of the compared rows (evidence grows with rows); "
                    "corrected_t: Nadeau-Bengio t-test over the k folds (grows with k only).",
    )
    blocks: int = Field(default=20, ge=2, description="Contiguous time blocks of the blocked test.")
    min_improvement: float = Field(
        default=0.01, ge=0, lt=1,
        description="The candidate's error must be lower by more than this share, with confidence 1 - alpha: "
                    "on a large window a real but negligible gain is not worth a new champion.",
    )
    detectable_improvement: float = Field(
        default=0.25, gt=0, lt=1,
        description="Error reduction the gate should detect with 80 % power; the verdict reports its power "
                    "for it and the compared rows that power needs.",
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=1,
        description="Rate at which an equal candidate is promoted at most (0.01: chosen by backtest, README).",
    )
    recent_share: float | None = Field(
        default=0.25, gt=0, lt=1,
        description="blocked test: a second look at the compared rows of the window's newest days (this share of "
                    "them), each look at alpha/2, so a change the champion missed weeks ago is not diluted; None: one look.",
    )
    min_compare_share: float = Field(
        default=0.01, ge=0, le=1, description="Fewest compared rows as a share of the current window."
    )
    min_compare_rows: int | None = Field(default=None, ge=1, description="Fewest compared rows, absolute (opt-in).")


class Monitoring(_Strict):
    """The champion's live quality check: its error on the newest labelled rows it never trained on, against the
    k-fold estimate recorded when it was trained. Every default is relative, so it fits any data."""

    label_delay_days: int = Field(
        default=0, ge=0, description="Labels arrive this many days after their rows: the newest days are not scored.",
    )
    degradation_margin: float = Field(
        default=0.1, gt=0,
        description="Degraded: the live error exceeds the k-fold error by more than this share, with confidence "
                    "1 - alpha (error = the metric for losses, 1 - the metric for scores).",
    )
    alpha: float = Field(default=0.01, gt=0, lt=1, description="Rate at which a champion as good as its estimate is "
                                                                  "called degraded at most.")
    blocks: int = Field(default=20, ge=2, description="Contiguous time blocks of the jackknife over the live rows.")
    min_live_share: float = Field(
        default=0.01, ge=0, le=1, description="Fewest live rows as a share of the current window; fewer: not judged.",
    )


class Registry(_Strict):
    # Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable, so a process that ran
    # one config would silently send the next config's runs to the first one's store.
    tracking_uri: str = Field(description="MLflow tracking URI (override: PIPELINE_TRACKING_URI).")
    artifact_root: str | None = Field(default=None, description="Artifact location for a newly created experiment.")
    experiment: str | None = None
    ui_url: str | None = Field(
        default=None,
        description="MLflow UI base URL for links in approvals and notifications (override: PIPELINE_MLFLOW_UI_URL).",
    )


class Promotion(_Strict):
    approval: Literal["manual", "auto"] = "manual"
    database_url: str = Field(description="SQLAlchemy URL of the promotion log (override: PIPELINE_DATABASE_URL).")


class Storage(_Strict):
    root: str = Field(description="Run directories live here, one per cycle (override: PIPELINE_STORAGE_ROOT).")


NotificationEvent = Literal["drift_detected", "approval_waiting", "gate_rejected", "promotion_done", "task_failed"]


class Notifications(_Strict):
    """Off unless a channel is set; the channels' addresses and credentials live in Airflow Connections."""

    events: list[NotificationEvent] = Field(default_factory=lambda: list(get_args(NotificationEvent)))
    email_to: list[str] = Field(default_factory=list, description="Recipients; sent through `smtp_conn_id`.")
    smtp_conn_id: str = "smtp_default"
    webhook_conn_id: str | None = Field(
        default=None, description="An HTTP Connection: JSON is POSTed to its URL (host, port, schema and path)."
    )


class Orchestration(_Strict):
    """How the Airflow DAGs run this model."""

    monitor_schedule: str = Field(default="0 * * * *", description="Cron for monitor_drift.")
    retrain_schedule: str = Field(default="0 2 * * *", description="Nightly cron for retrain_model.")
    timezone: str = "UTC"
    scheduled_as_of: Literal["previous_day", "latest"] = Field(
        default="previous_day",
        description="As-of date of a scheduled run: the last full day before it, or the newest day in the source.",
    )
    retrain_on: RetrainOn = Field(
        default="always",
        description="always: every retrain run trains, and drift starts one early; drift / degradation / "
                    "drift_or_degradation: a retrain run trains, and monitor_drift starts one, only when the data "
                    "drifted / the champion's live quality degraded / either.",
    )
    approval_timeout_hours: float = Field(default=24, gt=0, description="An unanswered approval counts as rejected.")
    approvers: list[str] = Field(default_factory=list, description="Airflow users who may answer; empty: any with access.")
    owner: str = "ml-platform"
    retries: int = Field(default=2, ge=0, description="Retries of transient faults; verdicts are never retried.")
    retry_delay_s: int = Field(default=60, gt=0)
    max_retry_delay_s: int = Field(default=900, gt=0)


class DaskCluster(_Strict):
    """Where the dask engine runs: a running scheduler, or a LocalCluster started for the cycle and closed after it."""

    scheduler_address: str | None = Field(
        default=None,
        description="e.g. tcp://dask-scheduler:8786 (override: PIPELINE_DASK_SCHEDULER_ADDRESS); None: a LocalCluster.",
    )
    n_workers: int | None = Field(default=None, gt=0, description="LocalCluster workers; None: Dask's choice for the machine.")
    threads_per_worker: int | None = Field(default=None, gt=0, description="LocalCluster threads per worker; None: Dask's.")
    memory_limit: str | None = Field(
        default=None, description="LocalCluster memory per worker (e.g. '4GiB'), beyond which workers spill; None: Dask's."
    )
    processes: bool = Field(default=True, description="LocalCluster workers as processes (False: threads of this one).")


class Compute(_Strict):
    """Where the heavy stages run (pipeline/distributed.py): in this process, or on a Dask cluster."""

    engine: Literal["local", "dask"] = Field(
        default="local",
        description="dask: drift statistics, k-fold training (xgboost.dask) and the champion's scoring run on "
                    "the cluster, one partition per day; only training.family xgboost supports it.",
    )
    dask: DaskCluster = DaskCluster()


class Config(_Strict):
    # A directory name and an MLflow name: no path separators, and not "." or "..".
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    task: Task
    source: Source
    windows: Windows = Windows()
    validation: Validation
    drift: Drift = Drift()
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    gate: Gate = Gate()
    monitoring: Monitoring = Monitoring()
    registry: Registry
    promotion: Promotion
    storage: Storage
    orchestration: Orchestration = Orchestration()
    notifications: Notifications = Notifications()
    compute: Compute = Compute()

    @model_validator(mode="after")
    def _task_consistency(self) -> Config:
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        if self.evaluation.primary_metric is None:
            self.evaluation.primary_metric = allowed[0]
        elif self.evaluation.primary_metric not in allowed:
            raise ValueError(
                f"evaluation.primary_metric {self.evaluation.primary_metric!r} is not one of {allowed} for {self.task}"
            )
        if self.task == "regression" and self.evaluation.split == "stratified":
            self.evaluation.split = "kfold"
        family = FAMILIES[self.training.family]
        if self.task not in family.tasks:
            raise ValueError(f"training.family {family.name!r} does not fit a {self.task} task")
        if self.compute.engine == "dask" and family.name != "xgboost":
            raise ValueError(f"compute.engine 'dask' trains with xgboost.dask: training.family must be 'xgboost' "
                             f"(got {family.name!r}), or use compute.engine 'local'")
        if self.compute.engine == "dask" and self.training.final_model != "refit":
            raise ValueError("compute.engine 'dask' registers a refit on the whole window: training.final_model must "
                             f"be 'refit' (got {self.training.final_model!r}), or use compute.engine 'local'")
        if set(self.gate.floors) - set(allowed):
            unknown_floors = sorted(set(self.gate.floors) - set(allowed))
            raise ValueError(f"gate.floors names metrics {unknown_floors}; {self.task} has {allowed}")
        if self.training.final_model == "fold_ensemble" and self.evaluation.split == "time":
            raise ValueError("training.final_model 'fold_ensemble' needs an evaluation.split other than 'time': "
                             "no fold model of the time split trains on the window's newest rows")
        if self.training.search.trials and self.compute.engine == "dask":
            raise ValueError("training.search runs its trials in this process: use compute.engine 'local', "
                             "or training.search.trials 0")
        unknown = set(self.drift.per_feature) - set(self.source.features.all)
        if unknown:
            raise ValueError(f"drift.per_feature names columns that are not features: {sorted(unknown)}")
        return self

    @property
    def primary_metric(self) -> str:
        assert self.evaluation.primary_metric is not None
        return self.evaluation.primary_metric

    def gate_warnings(self) -> list[str]:
        """Settings under which the gate cannot pass, or only after a wait, at this config's cadence."""
        gate, windows, found = self.gate, self.windows, []
        cadence = cadence_days(self.orchestration.retrain_schedule)
        for metric, floor in gate.floors.items():
            if (metric in ("roc_auc", "f1", "r2") and floor > 1) or (metric not in ("roc_auc", "f1", "r2") and floor < 0):
                found.append(f"gate.floors.{metric} = {floor:g} cannot be met by any model")
        if gate.min_compare_rows is not None and gate.min_compare_rows > windows.min_rows:
            found.append(f"gate.min_compare_rows {gate.min_compare_rows:,} exceeds windows.min_rows {windows.min_rows:,}: "
                         "on a window that small no champion can ever be compared")
        # Rows a champion has not seen grow by about one cadence's share of the window per cycle.
        share_per_cycle = min(cadence / windows.current_days, 1.0)
        cycles = math.ceil(gate.min_compare_share / share_per_cycle - 1e-9) if gate.min_compare_share else 1
        if cycles > 1:
            found.append(f"gate.min_compare_share {gate.min_compare_share:.0%} of a {windows.current_days}-day window "
                         f"needs a champion {cycles} cycles old at a cadence of {cadence:g} days "
                         f"(orchestration.retrain_schedule): every earlier cycle is rejected")
        if gate.test == "blocked" and 2.0 ** -gate.blocks > gate.alpha / 2:
            found.append(f"gate.blocks {gate.blocks}: the sign-flip test's smallest p is 2^-{gate.blocks} = "
                         f"{2.0 ** -gate.blocks:.2g}, above alpha/2 = {gate.alpha / 2:g} (its second look): "
                         "a stale champion can never be replaced")
        if gate.detectable_improvement <= gate.min_improvement:
            found.append(f"gate.detectable_improvement {gate.detectable_improvement:.0%} is not above "
                         f"gate.min_improvement {gate.min_improvement:.0%}: the gate would pass it at most at rate alpha")
        return found

    def monitoring_warnings(self) -> list[str]:
        """Settings under which the quality check can never call a champion degraded."""
        monitoring, found = self.monitoring, []
        if monitoring.label_delay_days >= self.windows.current_days:
            found.append(f"monitoring.label_delay_days {monitoring.label_delay_days} is not below windows.current_days "
                         f"{self.windows.current_days}: no row of the current window is ever labelled")
        if 2.0 ** -monitoring.blocks > monitoring.alpha:
            found.append(f"monitoring.blocks {monitoring.blocks}: the sign-flip test's smallest p is "
                         f"2^-{monitoring.blocks} = {2.0 ** -monitoring.blocks:.2g}, above monitoring.alpha "
                         f"{monitoring.alpha:g}: no champion is ever called degraded")
        return found


def cadence_days(schedule: str) -> float:
    """Days between two runs of a cron schedule (the shortest gap over a fortnight of runs)."""
    from datetime import datetime

    from croniter import croniter

    try:
        runs = croniter(schedule, datetime(2026, 1, 1))
        times = [runs.get_next(datetime) for _ in range(15)]
    except (ValueError, KeyError):
        return 1.0  # not a cron expression (an Airflow preset such as @daily): assume daily
    return min((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)) / 86400


def default_config_path(environ: dict[str, str] | None = None) -> Path:
    """The config the CLI, the DAGs and the review pages use: ``$PIPELINE_CONFIG``, else the demo's."""
    return Path((os.environ if environ is None else environ).get(CONFIG_ENV) or DEMO_CONFIG)


def redact_url(url: str) -> str:
    """A URL fit for records and messages: its password masked, and a ``password=`` query parameter too.

    The URL is split by hand rather than parsed: a parser reads an unencoded ``@``, ``/`` or ``:`` in a
    password as the start of the host or path and would print the rest of the secret as such. The
    credentials end at the last ``@``, so any password ends up masked; where the query holds an ``@``
    too, the host is masked along with it, which loses a little context but never a secret.
    """
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest:
        credentials, host = rest[: rest.rindex("@")], rest[rest.rindex("@") + 1:]
        user, has_password, _ = credentials.partition(":")
        if has_password:
            rest = f"{user}:***@{host}"
    return scheme + separator + _QUERY_PASSWORD.sub(r"\1***", rest)


_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&]*", re.IGNORECASE)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment and validate a config file.

    Relative file paths and SQLite URLs resolve against the config file's directory
    for the suite, and against the working directory for data locations.
    """
    path = Path(path)
    environ = dict(os.environ if environ is None else environ)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for var, keys in ENV_OVERRIDES.items():
        if environ.get(var):
            section = raw
            for key in keys[:-1]:
                section = section.setdefault(key, {})
            section[keys[-1]] = environ[var]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid configuration: {problems}") from None
    if not config.validation.suite.is_absolute():
        config.validation.suite = (path.parent / config.validation.suite).resolve()
    for warning in [*config.gate_warnings(), *config.monitoring_warnings()]:
        log.warning("%s: %s", path, warning)
    return config
