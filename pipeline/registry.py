"""Stage 7: MLflow tracking and model registry.

One MLflow run per cycle, found again by its ``cycle_id`` tag, so re-running a
cycle reuses its run and its model version instead of creating new ones.
"""

from __future__ import annotations

import math
import subprocess
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pipeline.config import Config
from pipeline.errors import PipelineError

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
# Retraining cycles and drift-monitoring cycles live in separate experiments: monitoring runs hourly or daily.
CycleKind = Literal["retrain", "monitor"]


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]

    @property
    def gate_passed(self) -> bool:
        return self.tags.get("gate.passed") == "true"

    @property
    def window(self) -> tuple[date, date] | None:
        if "window.start" not in self.tags:
            return None
        return date.fromisoformat(self.tags["window.start"]), date.fromisoformat(self.tags["window.end"])


def client(config: Config):
    """An MlflowClient on the configured tracking URI (also made the process default)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(config.registry.tracking_uri)
    return MlflowClient(tracking_uri=config.registry.tracking_uri)


def experiment_name(config: Config, kind: CycleKind = "retrain") -> str:
    name = config.registry.experiment or config.model_name
    return name if kind == "retrain" else f"{name}-monitoring"


def experiment_id(config: Config, kind: CycleKind = "retrain") -> str:
    mlflow_client = client(config)
    name = experiment_name(config, kind)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = config.registry.artifact_root
    location = Path(artifact_root).resolve().as_uri() if artifact_root and "://" not in artifact_root else artifact_root
    return mlflow_client.create_experiment(name, artifact_location=location)


def cycle_run_id(config: Config, cycle_id: str, kind: CycleKind = "retrain") -> str:
    """The MLflow run of this cycle: found by tag, or created once."""
    mlflow_client = client(config)
    exp = experiment_id(config, kind)
    found = mlflow_client.search_runs([exp], f"tags.cycle_id = '{cycle_id}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = mlflow_client.create_run(exp, run_name=cycle_id, tags={"cycle_id": cycle_id, "model_name": config.model_name})
    return run.info.run_id


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def log_to_run(
    config: Config, run_id: str, *, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
    step_metrics: dict[str, list[float]] | None = None, tags: dict[str, str] | None = None,
    artifacts: list[str] | None = None,
) -> None:
    """Log to the cycle's run; repeat calls with the same values leave no duplicates.

    Metrics carry a fixed timestamp (0) because MLflow dedupes identical (key, value, step, timestamp) rows.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    metric_rows = [Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items() if v is not None and not math.isnan(v)]
    for key, values in (step_metrics or {}).items():
        metric_rows += [Metric(key, float(v), 0, step) for step, v in enumerate(values, 1) if v is not None and not math.isnan(v)]
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
        mlflow_client.log_artifact(run_id, path)


def run_tags(config: Config, run_id: str) -> dict[str, str]:
    return dict(client(config).get_run(run_id).data.tags)


def set_run_status(config: Config, run_id: str, status: str) -> None:
    client(config).set_terminated(run_id, status=status)


def version_for_run(config: Config, run_id: str) -> VersionInfo | None:
    mlflow_client = client(config)
    found = mlflow_client.search_model_versions(f"name='{config.model_name}' and run_id='{run_id}'")
    return _info(mlflow_client, found[0]) if found else None


def _log_model(config: Config, run_id: str, model, example, signature, predict_fn: str, trusted: list[str]):
    import mlflow
    import sklearn
    import xgboost

    with mlflow.start_run(run_id=run_id):
        # Explicit requirements: MLflow's inference runs a subprocess for ~5 s per model.
        return mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=example,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"xgboost=={xgboost.__version__}",
                              f"mlflow=={mlflow.__version__}"],
            code_paths=[str(Path(__file__).parent)], serialization_format="skops", skops_trusted_types=trusted,
            pyfunc_predict_fn=predict_fn,
        )


def register_candidate(
    config: Config, run_id: str, model: Any, example: Any, tags: dict[str, str]
) -> VersionInfo:
    """Log the fitted pipeline to the cycle's run, register it and alias it ``challenger`` (once per run)."""
    from mlflow.models import infer_signature

    existing = version_for_run(config, run_id)
    mlflow_client = client(config)
    if existing is None:
        # Served classifiers answer with class probabilities: a churn score is worth more than a 0/1 label.
        predict_fn = "predict_proba" if config.task == "classification" else "predict"
        signature = infer_signature(example, getattr(model, predict_fn)(example))
        # skops refuses to load types it wasn't told to trust; these are exactly the types of the model we built.
        with warnings.catch_warnings():
            # skops finds a ufunc's module by probing every loaded module (on import, too); under Airflow that
            # trips a FutureWarning from each of Airflow's deprecated aliases: over a thousand log lines.
            warnings.simplefilter("ignore", FutureWarning)
            import skops.io

            trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
            logged = _log_model(config, run_id, model, example, signature, predict_fn, trusted)
        _ensure_registered_model(mlflow_client, config.model_name)
        # model_id: a tracking server refuses a models:/m-… source without it (a local store does not check).
        version = mlflow_client.create_model_version(
            config.model_name, logged.model_uri, run_id=run_id, tags=tags, model_id=logged.model_id
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
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name)


def _info(mlflow_client, version) -> VersionInfo:
    full = mlflow_client.get_model_version(version.name, version.version)
    return VersionInfo(version=str(full.version), run_id=full.run_id, tags=dict(full.tags), aliases=list(full.aliases))


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
    except MlflowException:
        return None


def run_ui_url(config: Config, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the config names the UI (`registry.ui_url`)."""
    base = config.registry.ui_url
    if not base:
        return None
    experiment = client(config).get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


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
    try:
        mlflow_client.delete_registered_model_alias(config.model_name, alias)
    except MlflowException:
        pass  # the alias was not set: removing it is already done


def set_version_tags(config: Config, version: str, tags: dict[str, str]) -> None:
    mlflow_client = client(config)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(config.model_name, str(version), key, value)


def load_model(config: Config, version: str):
    import mlflow

    client(config)
    return mlflow.sklearn.load_model(f"models:/{config.model_name}/{version}")


def list_versions(config: Config) -> list[VersionInfo]:
    mlflow_client = client(config)
    versions = mlflow_client.search_model_versions(f"name='{config.model_name}'")
    infos = [VersionInfo(str(v.version), v.run_id, dict(v.tags), list(v.aliases)) for v in versions]
    return sorted(infos, key=lambda v: int(v.version))

