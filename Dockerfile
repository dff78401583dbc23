# One image for every Python service of the production stack (docker-compose.yml): Airflow's
# api-server, scheduler, dag-processor and triggerer, the Celery workers, and the MLflow server.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/pipeline/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/pipeline/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False \
    SCARF_ANALYTICS=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

# curl: the compose healthchecks probe the services' HTTP health endpoints with it.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

# Airflow's own images run as uid 50000 in group 0; the same ids keep volumes interchangeable with them.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home airflow \
    && mkdir /opt/airflow/logs \
    && chown airflow:0 /opt/airflow/logs

WORKDIR /opt/pipeline

# Dependencies first, in their own layer: a code change does not reinstall them.
# requirements.txt pins everything; its last block, from "# tests" on, serves only the test suite.
COPY requirements.txt .
RUN sed '/^# tests$/,$d' requirements.txt > /tmp/runtime-requirements.txt \
    && pip install --requirement /tmp/runtime-requirements.txt

COPY pyproject.toml .
COPY pipeline/ pipeline/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info
COPY dags/ dags/
COPY plugins/ plugins/
COPY deploy/mlflow/ deploy/mlflow/

USER airflow
