# Two commands on a fresh machine: `make run` and `make test`. Both create .venv from requirements.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= pipeline/configs/demo.yaml
DAY    ?= latest
export MLFLOW_DISABLE_TELEMETRY ?= true
PROFILE ?=
# `down` and `logs` name every profile: a service whose profile is off is neither stopped nor shown.
ALL_PROFILES := --profile gpu --profile dask

# A verdict (3: validation stopped, 4: gate rejected) is the job done for make; the CLI keeps the codes for scripts.
VERDICT_IS_SUCCESS := || { code=$$?; [ $$code -eq 3 ] || [ $$code -eq 4 ] || exit $$code; }

.DEFAULT_GOAL := help
AIRFLOW_ENV := . scripts/airflow-env.sh
AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW_HOME

.PHONY: help venv seed run cycle backtest backtest-example airflow-init airflow status lint test bench bench-drift mlflow-ui clean up down logs

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-13s %s\n", $$1, $$2}'
	@echo "  Variables: CONFIG=$(CONFIG) DAY=$(DAY) (YYYY-MM-DD or latest)"

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## Create .venv from requirements.txt (if missing or outdated)

seed: venv ## Seed the embedded demo warehouse (data/warehouse.db) if missing
	$(PY) -m pipeline demo seed --config $(CONFIG)

run: seed airflow-init ## Run retrain_model through Airflow (`airflow dags test`) as of DAY and print the summary
	@$(AIRFLOW_ENV) && scripts/airflow-run $(abspath $(CONFIG)) '{"as_of": $(if $(filter latest,$(DAY)),null,"$(DAY)")}'

cycle: seed ## The same cycle without Airflow: the pipeline's own CLI
	$(PY) -m pipeline run --config $(CONFIG) --as-of $(DAY) $(VERDICT_IS_SUCCESS)

backtest: seed ## Replay CONFIG's history weekly: never / always / gate / drift retraining, scored one week ahead
	$(PY) -m pipeline backtest --config $(CONFIG) $(BACKTEST_ARGS)

ISLP_WHEEL := data/islp-0.6.0-py3-none-any.whl
$(ISLP_WHEEL): | venv
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps ISLP==0.6.0 -d data

backtest-example: $(ISLP_WHEEL) ## The backtest on a real dataset: ISLP's hourly Bikeshare (2011), examples/bikeshare
	$(PY) examples/bikeshare/warehouse.py $(ISLP_WHEEL) sqlite:///data/bikeshare.db
	$(PY) -m pipeline backtest --config examples/bikeshare/config.yaml --start 2011-01-28 $(BACKTEST_ARGS)

airflow-init: venv ## Create the project-local Airflow home (.airflow/) and migrate its SQLite metadata DB
	@$(AIRFLOW_ENV) && test -f $(AIRFLOW_HOME)/airflow.db || airflow db migrate > /dev/null

airflow: seed airflow-init ## Start Airflow (standalone) on http://127.0.0.1:8080 with the project's DAGs, unpaused
	@$(AIRFLOW_ENV) && PIPELINE_CONFIG=$(abspath $(CONFIG)) scripts/airflow-up

status: venv ## Show champion, challenger, pending approval, last cycles and the promotion log
	$(PY) -m pipeline status --config $(CONFIG)

lint: venv ## Lint everything (ruff, with Airflow's rules) and type-check pipeline/ (mypy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint ## Lint, type-check, then run the whole test suite (installs Debian's chromium for the browser tests when missing)
	@scripts/install-browser
	$(PY) -m pytest -q

bench: venv ## Benchmark one cycle at 100k and 1M rows x 30 features (BENCH_ARGS="--rows 200000" for others)
	$(PY) -m pipeline.bench $(BENCH_ARGS)

bench-drift: venv ## Drift defaults' false alarms (200 to 1M rows), detection power and the verdict's cost at 1M rows
	$(PY) -m pipeline.bench_drift $(BENCH_ARGS)

mlflow-ui: venv ## Open the MLflow UI on http://127.0.0.1:5000 for the demo's tracking store
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///data/mlflow.db

clean: ## Remove the demo's data, runs, MLflow store and Airflow home (keeps .venv)
	rm -rf data $(AIRFLOW_HOME)

up: ## Build the image and start the production stack (docker-compose.yml; PROFILE=gpu adds the GPU worker)
	@test -f .env || { echo "No .env: cp .env.example .env, then replace every change-me value (see README, Running in production)"; exit 1; }
	docker compose $(if $(PROFILE),--profile $(PROFILE)) up -d --build

down: ## Stop the production stack (its volumes stay; `docker compose down -v` deletes them)
	docker compose $(ALL_PROFILES) down

logs: ## Follow the production stack's logs
	docker compose $(ALL_PROFILES) logs --follow
