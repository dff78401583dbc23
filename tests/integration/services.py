"""Real services for the integration tests: PostgreSQL databases of their own, an S3-compatible server (moto)
and an `mlflow server` on loopback.

Every database a test creates has a unique name and is dropped afterwards; every process
started here runs in its own session and its whole process group is killed on exit.

Run as a module, this file is a child process for races: it imports everything first, says
it is ready, waits for the starting signal and only then runs the pipeline's CLI.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestration.servers import free_port, stop_group, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER = "127.0.0.1", 5432, "postgres"
ADMIN_URL = f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"


def postgres_url(database: str) -> str:
    return f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


def postgres_unreachable(url: str = ADMIN_URL) -> str | None:
    """Why PostgreSQL cannot be used for these tests, or None when it can."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        return str(exc.orig).strip()
    finally:
        engine.dispose()
    return None


def _admin(statement: str) -> None:
    import sqlalchemy as sa

    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@contextmanager
def postgres_database(purpose: str):
    """A fresh database ``it_<purpose>_<pid>_<random>``; yields its SQLAlchemy URL and drops it at the end."""
    name = f"it_{purpose}_{os.getpid()}_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url(name)
    finally:
        # FORCE: a server or a pooled connection still attached must not leave the database behind.
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


AUTH_SCRIPT = ROOT / "deploy" / "mlflow" / "auth.py"


@dataclass(frozen=True)
class MlflowLogin:
    username: str
    password: str

    @classmethod
    def new(cls, username: str) -> MlflowLogin:
        return cls(username, secrets.token_urlsafe(16))

    def env(self) -> dict[str, str]:
        """How MLflow's clients take a login."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def production_mlflow_environment() -> dict[str, str]:
    """The mlflow service's environment in docker-compose.yml, as written there (``${...}`` left unresolved)."""
    import yaml

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mlflow"]["environment"]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a PostgreSQL backend store, serving artifacts from ``artifacts``.

    With ``auth_database_uri`` it runs as the production stack's does: MLflow's basic-auth app (its users in that
    database, set up by deploy/mlflow/auth.py, an admin of its own in ``admin``) and docker-compose.yml's guard on
    model version sources.

    ``start()`` returns at once (migrating the store takes seconds; the caller can do other work meanwhile),
    ``wait_until_healthy()`` blocks until ``/health`` answers. As a context manager it does both.
    """

    def __init__(
        self, backend_store_uri: str, artifacts: str, log_path: Path, workers: int = 2,
        env: dict[str, str] | None = None, auth_database_uri: str | None = None,
    ):
        self.backend_store_uri = backend_store_uri
        self.artifacts = artifacts
        self.log_path = log_path
        self.workers = workers
        self.extra_env = env or {}
        self.auth_database_uri = auth_database_uri
        self.admin = MlflowLogin.new("admin") if auth_database_uri else None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def _auth_arguments(self, env: dict[str, str]) -> list[str]:
        """Configure the basic-auth app the way the compose file's mlflow service does, into ``env``."""
        if self.auth_database_uri is None or self.admin is None:
            return []
        config_path = self.log_path.parent / "basic_auth.ini"
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(config_path), MLFLOW_AUTH_DATABASE_URI=self.auth_database_uri,
                   MLFLOW_AUTH_ADMIN_USERNAME=self.admin.username, MLFLOW_AUTH_ADMIN_PASSWORD=self.admin.password,
                   MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_urlsafe(32))
        guard = "MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX"
        env[guard] = production_mlflow_environment()[guard].replace("$$", "$")  # compose escapes a literal $
        subprocess.run([sys.executable, str(AUTH_SCRIPT), "config", str(config_path)], env=env, check=True)
        return ["--app-name", "basic-auth"]

    def start(self) -> MlflowServer:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **self.extra_env}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        app = self._auth_arguments(env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "server", *app, "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers), "--backend-store-uri", self.backend_store_uri,
                 "--artifacts-destination", self.artifacts, "--serve-artifacts",
                 "--allowed-hosts", f"127.0.0.1:{self.port},localhost:{self.port}"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.log_path.parent,
            )
        return self

    def add_user(self, login: MlflowLogin) -> str:
        """``deploy/mlflow/auth.py ensure-user`` as the admin, as the stack's mlflow-init service runs it."""
        assert self.admin is not None, "a server without the auth app has no users"
        env = {**child_env(), **self.admin.env(), "MLFLOW_TRACKING_URI": self.url,
               "MLFLOW_PIPELINE_USER": login.username, "MLFLOW_PIPELINE_PASSWORD": login.password}
        done = subprocess.run([sys.executable, str(AUTH_SCRIPT), "ensure-user"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    def wait_until_healthy(self, timeout_s: float = 120) -> None:
        assert self.process is not None, "start() first"
        wait_until_serving(f"{self.url}/health", {"mlflow server": self.process}, lambda _: self.log_tail(), timeout_s)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """The whole process group: uvicorn's workers and MLflow's job runner with its huey consumers."""
        if self.process is not None:
            stop_group(self.process)

    def __enter__(self) -> MlflowServer:
        self.start()
        try:
            self.wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "integration", "AWS_SECRET_ACCESS_KEY": "integration-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto's S3-compatible server on 127.0.0.1 (the MinIO of the production stack), with one bucket."""

    def __init__(self, bucket: str, log_path: Path):
        self.bucket = bucket
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            self._wait_until_up()
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            stop_group(self.process)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            stop_group(self.process)

    def _wait_until_up(self, timeout_s: float = 60) -> None:
        wait_until_serving(f"{self.url}/moto-api/", {"moto_server": self.process}, self.log_tail, timeout_s)

    def log_tail(self, _name: str = "moto_server") -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
                            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment without pipeline, MLflow-URI or Airflow settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIPELINE_", "AIRFLOW")) and k != "MLFLOW_TRACKING_URI"}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", **overrides}


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline <args>`` as a separate process, the way an operator or a scheduler runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
    )


def race_cli(
    commands: list[list[str]], env: dict[str, str], scratch: Path, timeout_s: float = 120
) -> list[subprocess.CompletedProcess]:
    """Start one process per command and let them call the CLI at the same moment.

    Each child imports the pipeline, MLflow and the database driver first (seconds, and uneven on a
    busy machine), then creates its ready file and spins on the go file; so the calls start within
    about a millisecond of each other instead of whenever each import happened to finish.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    go = scratch / f"go-{token}"
    ready = [scratch / f"ready-{token}-{i}" for i in range(len(commands))]
    # This module, run as the child, imports orchestration.servers from dags/, which pytest puts on its own path only.
    child_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "dags"), env.get("PYTHONPATH")]))}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.services", str(ready_file), str(go), *command],
            env=child_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        for ready_file, command in zip(ready, commands, strict=True)
    ]
    try:
        deadline = time.monotonic() + timeout_s
        while not all(r.exists() for r in ready):
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                break  # a child died while importing: communicate() below reports it
            time.sleep(0.05)
        go.touch()
        results = []
        for process, command in zip(processes, commands, strict=True):
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                stop_group(process, timeout_s=0)


def _cli_after_barrier(argv: list[str]) -> int:
    ready, go, *cli_args = argv
    import mlflow  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy  # noqa: F401

    from pipeline import cli, promote, registry  # noqa: F401

    Path(ready).touch()
    while not os.path.exists(go):
        time.sleep(0.0005)
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(_cli_after_barrier(sys.argv[1:]))
