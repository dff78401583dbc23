"""Gated, continuously retrained ML pipeline: load → validate → drift → train → gate → register → promote.

This package never imports Airflow: every stage is a plain function that the CLI,
the tests and the DAGs call alike.
"""

import os

# A retraining job must not contact the internet, and MLflow's telemetry is on by default.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# OpenMP threads spin-wait by default, which makes XGBoost 10x slower on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
