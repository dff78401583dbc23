"""The production stack on real services: PostgreSQL (warehouse, MLflow store, promotion log), an S3-compatible
object store (moto standing in for MinIO) and an MLflow server, all on loopback.

These tests never skip: in CI a missing service is a broken environment, and a skipped test would hide it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from tests.dags.harness import dag_config
from tests.integration.services import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    S3_CREDENTIALS,
    MlflowLogin,
    MlflowServer,
    S3Server,
    child_env,
    postgres_database,
    postgres_unreachable,
)


@dataclass
class Stack:
    """One model's world on real services.

    ``environ`` holds the pipeline's overrides (every URL, as in production); ``process_env`` what any process
    of the stack needs besides (the object store's endpoint and keys, a private local work folder).
    """

    server: MlflowServer
    s3: S3Server
    work: Path
    config_path: Path
    warehouse_url: str
    promotion_log_url: str
    environ: dict[str, str]
    process_env: dict[str, str]

    def config(self) -> Config:
        return load_config(self.config_path, environ=self.environ)

    def cli_env(self) -> dict[str, str]:
        return child_env(**self.environ, **self.process_env)


@pytest.fixture(scope="session")
def postgres() -> None:
    """Fails every test that needs PostgreSQL, loudly, when it is not reachable."""
    problem = postgres_unreachable()
    if problem:
        pytest.fail(
            f"PostgreSQL is required on {POSTGRES_HOST}:{POSTGRES_PORT} (user postgres, trust auth) for the "
            f"integration tests and cannot be reached: {problem}\n"
            "Start it (e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main start`); these tests do not skip.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory) -> Iterator[Stack]:
    """Four databases of this module's own, a bucket, the demo warehouse seeded, and an MLflow server behind its
    basic-auth app, which the pipeline signs in to as its own user."""
    import fsspec.config

    from pipeline import demo

    work = tmp_path_factory.mktemp("services")
    bucket = f"it-pipeline-{secrets.token_hex(4)}"
    with ExitStack() as cleanup:
        mlflow_store = cleanup.enter_context(postgres_database("mlflow"))
        warehouse = cleanup.enter_context(postgres_database("warehouse"))
        promotion_log = cleanup.enter_context(postgres_database("promotion_log"))
        mlflow_users = cleanup.enter_context(postgres_database("mlflow_auth"))
        s3 = cleanup.enter_context(S3Server(bucket, work / "moto-server.log"))
        # As in docker-compose.yml: fsspec (run directories) and MLflow (artifacts) each take the endpoint from
        # their own variable.
        # The pipeline signs in to MLflow as its own user, as in docker-compose.yml.
        pipeline_login = MlflowLogin.new("pipeline")
        process_env = {**S3_CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": s3.url,
                       "PIPELINE_WORK_DIR": str(work / "pipeline-work"), **pipeline_login.env()}
        server = MlflowServer(mlflow_store, f"s3://{bucket}/mlartifacts", work / "mlflow-server.log",
                              env={**S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3.url}, auth_database_uri=mlflow_users)
        cleanup.callback(server.stop)
        server.start()
        demo.seed_demo(warehouse)  # while the server migrates its store
        server.wait_until_healthy()
        server.add_user(pipeline_login)

        # This process runs cycles too; fsspec read its FSSPEC_* variables when first imported.
        patch = cleanup.enter_context(pytest.MonkeyPatch.context())
        for name, value in process_env.items():
            patch.setenv(name, value)
        patch.setitem(fsspec.config.conf, "s3", {**fsspec.config.conf.get("s3", {}), "endpoint_url": s3.url})

        # The file keeps dag_config's local stores; the environment points every one at a service, so a value
        # that did not come from the environment shows up as a file under `work`, not as a pass.
        # No artifact_root: through a tracking server, artifacts go to the server (mlflow-artifacts:/).
        config_path = dag_config(work / "config", warehouse_url=f"sqlite:///{work / 'no-warehouse.db'}",
                                 registry={"artifact_root": None})
        yield Stack(
            server=server, s3=s3, work=work, config_path=config_path,
            warehouse_url=warehouse, promotion_log_url=promotion_log,
            environ={
                "PIPELINE_SOURCE_URL": warehouse,
                "PIPELINE_TRACKING_URI": server.url,
                "PIPELINE_DATABASE_URL": promotion_log,
                "PIPELINE_STORAGE_ROOT": f"s3://{bucket}/runs",
            },
            process_env=process_env,
        )
