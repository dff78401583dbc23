"""MLflow tracking and model registry: the calls the pipeline makes, and how they stay idempotent.

One MLflow run per cycle, found again by its ``cycle_id`` tag, so re-running a cycle reuses
its run and its model version instead of creating new ones. Which tags and metrics a cycle
logs is the record's business (``pipeline.record``); this module only talks to MLflow.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline import artifacts
from pipeline.config import Config, redact_url
from pipeline.errors import ModelArtifactError, PipelineError, RegistryAccessDenied, RegistryUnreachable
from pipeline.families import FAMILIES

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
# Retraining cycles and drift-monitoring cycles live in separate experiments: monitoring runs hourly or daily.
CycleKind = Literal["retrain", "monitor"]


# Retrying belongs to Airflow's task retries: MLflow's defaults (7 retries, backoff doubling to 2 minutes) spend
# over four minutes on a server that is down before anything is reported. Set in the environment, they win.
_MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # Every load downloads a model's ~40 files: a progress bar per load would fill the task logs.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]
    model_id: str | None = None  # the logged model (MLflow 3) whose files the version is


def client(config: Config):
    """An MlflowClient on the configured tracking URI (also made the process default).

    Its calls raise RegistryUnreachable, naming the server, when the server cannot be reached, and
    RegistryAccessDenied when it refuses the login or the permission.
    """
    import mlflow

    for name, value in _MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(config.registry.tracking_uri)
    return _Client(config.registry.tracking_uri)


class _Client:
    """An MlflowClient whose every call turns "cannot be reached" and "refused" into the pipeline's errors."""

    def __init__(self, tracking_uri: str):
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._tracking_uri = tracking_uri

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args, **kwargs):
            with _reaching(self._tracking_uri):
                return attribute(*args, **kwargs)

        return call


@contextmanager
def _reaching(tracking_uri: str) -> Iterator[None]:
    """MLflow calls inside that fail to connect raise RegistryUnreachable, those the server refuses
    RegistryAccessDenied; the URI's password masked."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise RegistryAccessDenied(_refusal(tracking_uri, exc)) from None
        chain: list[BaseException] = []
        cause = exc.__cause__ or exc.__context__
        while cause is not None and len(chain) < 20:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if not any(isinstance(c, requests.ConnectionError | requests.Timeout) for c in chain):
            raise
        root = chain[-1]
        reason = root.strerror if isinstance(root, OSError) and root.strerror else str(root) or type(root).__name__
        # MLflow's own message quotes the URL with its password: it is left out.
        raise RegistryUnreachable(
            f"the MLflow tracking server at {redact_url(tracking_uri)} cannot be reached ({reason}); "
            "check that it is running and that registry.tracking_uri (PIPELINE_TRACKING_URI) names it"
        ) from None


def _refusal(tracking_uri: str, exc) -> str:
    """Why the server refused, and what to set; MLflow's message names the endpoint, never the password."""
    server = f"the MLflow tracking server at {redact_url(tracking_uri)}"
    endpoint = re.search(r"endpoint (\S+)", str(exc))
    action = f" ({endpoint.group(1)})" if endpoint else ""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if exc.error_code == "UNAUTHENTICATED":
        who = f"user {user!r} with the password in MLFLOW_TRACKING_PASSWORD" if user else "no user"
        return (f"{server} refused the login{action}: {who}. Set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD to the pipeline's MLflow user (deploy/mlflow/auth.py ensure-user)")
    return (f"{server} denied user {user!r} this request{action}: the pipeline's user needs MANAGE on the "
            "experiment and the registered model (it has it on those it created itself); an MLflow admin grants it")


def experiment_name(config: Config, kind: CycleKind = "retrain") -> str:
    name = config.registry.experiment or config.model_name
    return name if kind == "retrain" else f"{name}-monitoring"


def find_experiment_id(config: Config, kind: CycleKind = "retrain") -> str | None:
    """The experiment's id, or None when no cycle of this kind has run yet (reading never creates one)."""
    experiment = client(config).get_experiment_by_name(experiment_name(config, kind))
    return None if experiment is None else experiment.experiment_id


def ensure_experiment_id(config: Config, kind: CycleKind = "retrain") -> str:
    found = find_experiment_id(config, kind)
    if found is not None:
        return found
    artifact_root = config.registry.artifact_root
    location = Path(artifact_root).resolve().as_uri() if artifact_root and "://" not in artifact_root else artifact_root
    # Without this tag MLflow 3's UI opens an experiment on its GenAI overview, not on the runs table.
    return client(config).create_experiment(experiment_name(config, kind), artifact_location=location,
                                            tags={"mlflow.experimentKind": "custom_model_development"})


def find_runs(config: Config, kind: CycleKind, where: str = "", max_results: int = 1) -> list:
    """The kind's runs matching an MLflow filter, newest first; none when its experiment does not exist."""
    experiment = find_experiment_id(config, kind)
    if experiment is None:
        return []
    return client(config).search_runs(
        [experiment], _cycles_only(where), max_results=max_results, order_by=["attributes.start_time DESC"]
    )


def _cycles_only(where: str) -> str:
    """A filter that also leaves out a cycle's child runs (a search's trials), which carry no cycle id."""
    return " and ".join(part for part in (CYCLE_RUNS, where) if part)


CYCLE_RUNS = "tags.cycle_id != ''"


def all_runs(config: Config, kind: CycleKind, where: str = "") -> list:
    """Every run of the kind that matches an MLflow filter, page by page (a search returns at most 50,000)."""
    experiment = find_experiment_id(config, kind)
    if experiment is None:
        return []
    found, token = [], None
    while True:
        page = client(config).search_runs([experiment], _cycles_only(where), max_results=10_000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def cycle_run_id(config: Config, cycle_id: str, kind: CycleKind, tags: dict[str, str], run_name: str) -> str:
    """The MLflow run of this cycle: found by tag, or created once with ``tags`` (the caller holds the cycle's lock)."""
    found = find_runs(config, kind, f"tags.cycle_id = '{cycle_id}'")
    if found:
        return found[0].info.run_id
    run = client(config).create_run(
        ensure_experiment_id(config, kind), run_name=run_name,
        tags={"cycle_id": cycle_id, "model_name": config.model_name, **tags},
    )
    return run.info.run_id


@dataclass(frozen=True)
class ChildRuns:
    """A run's child runs, by the value of their ``key_tag``: those finished, and those a killed attempt left open."""

    experiment_id: str
    finished: dict[str, str]
    unfinished: dict[str, str]


def child_runs(config: Config, parent_run_id: str, key_tag: str) -> ChildRuns:
    run = client(config).get_run(parent_run_id)
    children = client(config).search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                          max_results=10_000)
    keyed = [child for child in children if key_tag in child.data.tags]
    return ChildRuns(run.info.experiment_id,
                     {child.data.tags[key_tag]: child.info.run_id for child in keyed if child.info.status == "FINISHED"},
                     {child.data.tags[key_tag]: child.info.run_id for child in keyed if child.info.status != "FINISHED"})


def log_child_run(config: Config, parent_run_id: str, children: ChildRuns, run_name: str, key_tag: str, key: str, *,
                  params: dict[str, Any], metrics: dict[str, float | None], step_metrics: dict[str, list[float]],
                  tags: dict[str, str]) -> str:
    """A finished child run under ``parent_run_id`` (MLflow's UI nests it there), keyed by its ``key_tag``: one that
    a killed attempt left unfinished (in ``children``) is completed, not made again."""
    mlflow_client = client(config)
    run_id = children.unfinished.get(key) or mlflow_client.create_run(
        children.experiment_id, run_name=run_name,
        tags={"mlflow.parentRunId": parent_run_id, key_tag: key, **tags}).info.run_id
    log_to_run(config, run_id, params=params, metrics=metrics, step_metrics=step_metrics, tags=tags)
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def log_to_run(
    config: Config, run_id: str, *, params: dict[str, Any] | None = None, metrics: dict[str, float | None] | None = None,
    step_metrics: dict[str, list[float]] | None = None, tags: dict[str, str] | None = None,
    artifacts: list[Path] | None = None,
) -> None:
    """Log to the cycle's run: a re-run's value replaces the one before it, the same value is stored once.

    A metric is logged only when it differs from the newest value recorded at its step, and then at
    the current time: MLflow keys a logged model's copy of the run's metrics on (name, step, time)
    without the value, so two values at one time would collide when the model is logged.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    wanted = {(key, 0): float(value) for key, value in (metrics or {}).items() if value is not None}
    for key, values in (step_metrics or {}).items():
        wanted |= {(key, step): float(value) for step, value in enumerate(values, 1) if value is not None}
    wanted = {key_step: value for key_step, value in wanted.items() if not math.isnan(value)}
    now = int(time.time() * 1000)
    metric_rows = [Metric(key, value, now, step) for (key, step), value in _changed(mlflow_client, run_id, wanted).items()]
    try:
        mlflow_client.log_batch(
            run_id, metrics=metric_rows, params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )
    except MlflowException as exc:
        if "Changing param values is not allowed" in str(exc):
            raise PipelineError(
                f"this cycle's MLflow run {run_id} was logged with other settings; "
                f"run it under a new --cycle-id instead ({exc.message.splitlines()[0]})"
            ) from None
        raise
    for path in artifacts or []:
        mlflow_client.log_artifact(run_id, str(path))


def _changed(mlflow_client, run_id: str, wanted: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    """The (metric, step) values that differ from the newest ones the run holds."""
    if not wanted:
        return {}
    latest = mlflow_client.get_run(run_id).data.metrics
    recorded = {(key, 0): value for key, value in latest.items()}
    for key in {key for key, step in wanted if step} & set(latest):
        for metric in sorted(mlflow_client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            recorded[(key, metric.step)] = metric.value
    return {key_step: value for key_step, value in wanted.items() if recorded.get(key_step) != value}


def set_run_status(config: Config, run_id: str, status: str) -> None:
    """RUNNING reopens a run (a re-run); any other status ends it."""
    mlflow_client = client(config)
    if status == "RUNNING":
        mlflow_client.update_run(run_id, status=status)
    else:
        mlflow_client.set_terminated(run_id, status=status)


@contextmanager
def inside_run(config: Config, run_id: str) -> Iterator[None]:
    """Make the run active for MLflow's fluent calls (log_input, log_model) without ending it afterwards.

    ``with mlflow.start_run()`` would mark the run FINISHED on exit although the cycle goes on.
    """
    import mlflow

    status = client(config).get_run(run_id).info.status
    with _reaching(config.registry.tracking_uri):
        mlflow.start_run(run_id=run_id)
        try:
            yield
        finally:
            mlflow.end_run(status=status)


def version_for_run(config: Config, run_id: str) -> VersionInfo | None:
    mlflow_client = client(config)
    found = mlflow_client.search_model_versions(f"name='{config.model_name}' and run_id='{run_id}'")
    return _info(mlflow_client, found[0]) if found else None


def _log_model(config: Config, run_id: str, model, example, signature, predict_fn: str, trusted: list[str]):
    import mlflow
    import sklearn

    packages = FAMILIES[config.training.family].packages
    requirements = [f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}",
                    *(f"{package}=={importlib.metadata.version(package)}" for package in packages)]
    with inside_run(config, run_id):
        # Explicit requirements: MLflow's inference runs a subprocess for ~5 s per model.
        return mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=example, pip_requirements=requirements,
            code_paths=[str(Path(__file__).parent)], serialization_format="skops", skops_trusted_types=trusted,
            pyfunc_predict_fn=predict_fn,
        ).model_id


def _logged_model_id(config: Config, run_id: str) -> str | None:
    """The run's complete logged model, if an earlier attempt logged one; incomplete ones are deleted.

    A process killed while logging leaves a PENDING model, an exception a FAILED one: neither is usable.
    """
    mlflow_client = client(config)
    experiment = mlflow_client.get_run(run_id).info.experiment_id
    ready = None
    for logged in mlflow_client.search_logged_models([experiment], f"source_run_id = '{run_id}'"):
        if str(logged.status) == "READY" and ready is None:
            ready = logged.model_id
        else:
            mlflow_client.delete_logged_model(logged.model_id)
    return ready


def register_candidate(
    config: Config, run_id: str, model: Any, example: Any, tags: dict[str, str], progress=lambda message: None,
) -> VersionInfo:
    """Log the fitted pipeline to the cycle's run, register it and alias it ``challenger`` (once per run).

    Every step finds what an interrupted attempt left: the version, else a complete logged model.
    """
    from mlflow.models import infer_signature

    existing = version_for_run(config, run_id)
    mlflow_client = client(config)
    if existing is None:
        model_id = _logged_model_id(config, run_id)
        if model_id is None:
            progress("logging the model")
            # Served classifiers answer with class probabilities: a churn score is worth more than a 0/1 label.
            predict_fn = "predict_proba" if config.task == "classification" else "predict"
            signature = infer_signature(example, getattr(model, predict_fn)(example))
            # Written to MLmodel for other consumers (pyfunc serving); the pipeline loads with its own allow-list.
            trusted = artifacts.untrusted_types(model)
            with artifacts.quiet_skops():  # MLflow dumps the model with skops
                model_id = _log_model(config, run_id, model, example, signature, predict_fn, trusted)
        progress("recording the model's files")
        with _downloaded_model(config, model_id) as directory:
            manifest = artifacts.Manifest.of_directory(directory)
        progress("registering the model version")
        _ensure_registered_model(mlflow_client, config.model_name)
        # model_id: a tracking server refuses a models:/m-… source without it (a local store does not check).
        # The manifest comes with the version in one call: no version ever exists without one.
        version = mlflow_client.create_model_version(
            config.model_name, f"models:/{model_id}", run_id=run_id, tags={**tags, **manifest.tags()},
            model_id=model_id,
        )
        number = version.version
    else:
        number = existing.version
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(config.model_name, number, key, value)
    # A re-run must not undo a decision: an approved or rejected version is no challenger any more.
    if existing is None or "approval" not in existing.tags:
        mlflow_client.set_registered_model_alias(config.model_name, CHALLENGER, number)
    return get_version(config, number)


def _ensure_registered_model(mlflow_client, name: str) -> None:
    if not _model_exists(mlflow_client, name):
        mlflow_client.create_registered_model(name)


def _info(mlflow_client, version) -> VersionInfo:
    full = mlflow_client.get_model_version(version.name, version.version)
    # A SQLite store keeps no model_id on the version; its source, models:/m-…, names the logged model all the same.
    source = full.source or ""
    model_id = full.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)
    return VersionInfo(version=str(full.version), run_id=full.run_id, tags=dict(full.tags), aliases=list(full.aliases),
                       model_id=model_id)


def get_version(config: Config, version: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    try:
        return _info(mlflow_client, mlflow_client.get_model_version(config.model_name, str(version)))
    except MlflowException:
        raise PipelineError(f"model {config.model_name!r} has no version {version}") from None


def alias_version(config: Config, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    try:
        return _info(mlflow_client, mlflow_client.get_model_version_by_alias(config.model_name, alias))
    except MlflowException as exc:
        # An unset alias or no model yet; anything else (a server error) must not read as "no champion".
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise
    except RegistryAccessDenied:
        # MLflow's auth app answers 403, not 404, for an alias of a model that does not exist yet.
        if not _model_exists(mlflow_client, config.model_name):
            return None
        raise


def _model_exists(mlflow_client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


# MLflow 3's UI opens an experiment as a GenAI one (its traces overview) unless the link asks for model training,
# whatever the experiment's ``mlflow.experimentKind``; with it, the run's breadcrumb leads to the runs table.
ML_WORKFLOW = "?workflowType=machine_learning"


def run_ui_url(config: Config, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the config names the UI (`registry.ui_url`)."""
    base = config.registry.ui_url
    if not base:
        return None
    experiment = client(config).get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}{ML_WORKFLOW}"


def runs_ui_url(config: Config, run_id: str) -> str | None:
    """The runs table of the run's experiment in the MLflow UI, when the config names the UI."""
    run = run_ui_url(config, run_id)
    return None if run is None else run.replace(f"/{run_id}{ML_WORKFLOW}", ML_WORKFLOW)


def aliases(config: Config) -> dict[str, str]:
    """alias → version for the model's aliases that are set."""
    found = {alias: alias_version(config, alias) for alias in ALIASES}
    return {alias: info.version for alias, info in found.items() if info is not None}


def set_alias(config: Config, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it when version is None."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    if version is not None:
        mlflow_client.set_registered_model_alias(config.model_name, alias, str(version))
        return
    with suppress(MlflowException):  # the alias was not set: removing it is already done
        mlflow_client.delete_registered_model_alias(config.model_name, alias)


def set_version_tags(config: Config, version: str, tags: dict[str, str]) -> None:
    mlflow_client = client(config)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(config.model_name, str(version), key, value)


@contextmanager
def _downloaded_model(config: Config, model_id: str) -> Iterator[Path]:
    """A logged model's directory, fetched from the artifact store into a folder removed afterwards."""
    import mlflow

    location = client(config).get_logged_model(model_id).artifact_location
    with tempfile.TemporaryDirectory(prefix="pipeline-model-") as scratch:
        with _reaching(config.registry.tracking_uri):
            path = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=scratch)
        yield Path(path)


@contextmanager
def verified_artifact(config: Config, version: str) -> Iterator[tuple[Path, artifacts.Manifest]]:
    """The version's files, downloaded and checked one by one against the manifest recorded at registration.

    Downloaded from the logged model itself, not through ``models:/name/version``, which adds a file of its own.
    """
    info = get_version(config, version)
    manifest = artifacts.recorded_manifest(config.model_name, info.version, info.tags)
    if info.model_id is None:
        raise ModelArtifactError(f"version {info.version} of {config.model_name!r} names no logged model")
    with _downloaded_model(config, info.model_id) as directory:
        artifacts.verify(directory, manifest, config.model_name, info.version)
        yield directory, manifest


def verify_version(config: Config, version: str) -> artifacts.Manifest:
    """The version's manifest, once its files in the artifact store are checked against it."""
    with verified_artifact(config, version) as (_, manifest):
        return manifest


def load_model(config: Config, version: str):
    """The version's fitted pipeline: verified, then deserialized with the installed ``pipeline`` package.

    Not ``mlflow.sklearn.load_model``: it trusts the types the artifact's own MLmodel lists and puts the
    artifact's ``code/`` first on ``sys.path``; both come from the store this guards against.
    """
    with verified_artifact(config, version) as (directory, _):
        return artifacts.load_model_file(directory, config.model_name, str(version))


def list_versions(config: Config) -> list[VersionInfo]:
    mlflow_client = client(config)
    versions = mlflow_client.search_model_versions(f"name='{config.model_name}'")
    infos = [VersionInfo(str(v.version), v.run_id, dict(v.tags), list(v.aliases)) for v in versions]
    return sorted(infos, key=lambda v: int(v.version))

