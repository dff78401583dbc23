# Sourced by the Makefile: a project-local Airflow on the embedded default
# (SQLite metadata, LocalExecutor, the project's DAGs only, API on 127.0.0.1).
# Override AIRFLOW_HOME, AIRFLOW_PORT or PIPELINE_CONFIG in the environment.
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW_USERS:-admin:admin}"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$AIRFLOW__API__PORT"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AIRFLOW__API__BASE_URL/execution/"
export PIPELINE_CONFIG="${PIPELINE_CONFIG:-$PWD/pipeline/configs/demo.yaml}"
export MLFLOW_DISABLE_TELEMETRY=true SCARF_ANALYTICS=false AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False
mkdir -p "$AIRFLOW_HOME"
# Every Airflow process must sign and check tokens with the same key; HMAC wants 64 bytes or more.
[ -s "$AIRFLOW_HOME/jwt_secret" ] || python3 -c 'import secrets; print(secrets.token_urlsafe(64))' > "$AIRFLOW_HOME/jwt_secret"
AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret")"
export AIRFLOW__API_AUTH__JWT_SECRET
export PATH="$PWD/.venv/bin:$PATH"
# LocalExecutor's tasks forked from a forkserver that has imported the stages' libraries (dags/orchestration/preload.py).
export AIRFLOW__SCHEDULER__MP_START_METHOD=forkserver
AIRFLOW__CORE__MP_FORKSERVER_PRELOAD="$(PYTHONPATH="$PWD/dags" python -m orchestration.preload)"
export AIRFLOW__CORE__MP_FORKSERVER_PRELOAD
