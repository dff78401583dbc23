"""The DAGs' glue: the source Connection, a run's cycle id and as-of date, what started it, and the promote guard."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from orchestration import runtime, stages
from pipeline.record import Trigger, TriggerEvent
from tests.dags.harness import DEMO_CONFIG


@pytest.mark.parametrize(
    "connection, url",
    [
        pytest.param({"conn_type": "postgres", "host": "db.internal", "port": 5433, "login": "reader",
                      "password": "p@ss/word", "schema": "warehouse"},
                     "postgresql+psycopg://reader:p%40ss%2Fword@db.internal:5433/warehouse", id="postgres"),
        pytest.param({"conn_type": "sqlite", "host": "/data/warehouse.db"}, "sqlite:////data/warehouse.db", id="sqlite"),
        pytest.param({"conn_type": "mysql", "host": "db", "login": "r", "schema": "w"}, "mysql+pymysql://r@db/w", id="mysql"),
    ],
)
def test_a_connection_becomes_a_sqlalchemy_url(monkeypatch, connection, url):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_TEST", json.dumps(connection))
    assert runtime.connection_url("warehouse_test") == url


def test_without_the_connection_the_config_url_is_used(monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", str(DEMO_CONFIG))
    monkeypatch.delenv("AIRFLOW_CONN_NOT_THERE", raising=False)
    assert runtime.connection_url("not_there") is None
    config = runtime.task_config({})
    assert config.source.url == "sqlite:///data/warehouse.db"


def test_the_trigger_form_overrides_family_folds_and_trials(monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", str(DEMO_CONFIG))
    config = runtime.task_config({"family": "random_forest", "k": 3, "tune_trials": 20})
    assert (config.training.family, config.evaluation.k, config.training.search.trials) == ("random_forest", 3, 20)
    assert runtime.task_config({"tune_trials": 0}).training.search.trials == 0
    assert runtime.parse_time_config().training.search.trials == 0  # the file's value stays as it was


def test_the_trigger_form_has_a_tune_field_next_to_family_and_folds():
    from retrain_model import retrain_model

    params = retrain_model().params
    assert list(params)[list(params).index("k") + 1] == "tune_trials"
    field = params.get_param("tune_trials")
    assert (field.value, field.schema["title"], field.schema["minimum"]) == (0, "Tune (trials)", 0)
    assert field.description == "Hyperparameter search trials inside the k-fold (training.search); 0: off."


def test_one_cycle_per_dag_run_with_a_safe_id():
    config = runtime.parse_time_config()
    run_id = "asset_triggered__2026-11-22T18:31:33.870509+00:00_hiM9tWPT"
    assert runtime.cycle_id_for(config, "retrain", run_id) == \
        "demo_churn-retrain-asset_triggered__2026-11-22T18-31-33.870509-00-00_hiM9tWPT"


def _context(run_type: str, params: dict | None = None, events: list[dict] | None = None, logical_date=None):
    consumed = [SimpleNamespace(extra=e, asset=SimpleNamespace(name="demo_churn.drift_detected"),
                                source_dag_id="monitor_drift", source_run_id="manual__x") for e in events or []]
    dag_run = SimpleNamespace(run_type=SimpleNamespace(value=run_type), logical_date=logical_date, run_after=logical_date,
                              consumed_asset_events=consumed, dag_id="retrain_model", run_id=f"{run_type}__x",
                              triggering_user_name="alice" if run_type == "manual" else None)
    return {"dag_run": dag_run, "params": {"as_of": None, "note": "", **(params or {})}}


@pytest.mark.parametrize(
    "context, expected",
    [
        pytest.param(_context("manual", {"as_of": "2026-03-28"}), date(2026, 3, 28), id="form-date-wins"),
        pytest.param(_context("asset_triggered", events=[{"as_of": "2026-05-27"}, {"as_of": "2026-05-28"}]),
                     date(2026, 5, 28), id="newest-drift-event"),
        pytest.param(_context("scheduled", logical_date=datetime(2026, 6, 30, 2, tzinfo=UTC)),
                     date(2026, 6, 29), id="nightly-checks-the-last-full-day"),
    ],
)
def test_as_of_date(context, expected):
    config = runtime.parse_time_config()
    config.orchestration.scheduled_as_of = "previous_day"  # the real-config default; the demo uses "latest"
    assert runtime.resolve_as_of(config, context) == expected


def test_the_trigger_records_the_drift_events():
    trigger = runtime.trigger_of(_context("asset_triggered", {"note": "after the migration"},
                                          events=[{"as_of": "2026-05-28", "drift_share": 0.33}]))
    assert trigger.kind == "drift" and trigger.note == "after the migration"
    assert trigger.events == [TriggerEvent("demo_churn.drift_detected", "monitor_drift/manual__x",
                                           {"as_of": "2026-05-28", "drift_share": 0.33})]
    assert Trigger.from_dict(trigger.to_dict()) == trigger
    assert runtime.trigger_of(_context("manual")).kind == "manual"


@pytest.mark.parametrize(
    ("events", "kind"),
    [
        pytest.param([{"as_of": "2026-05-28"}], "drift", id="an-event-from-before-the-quality-check"),
        pytest.param([{"reasons": ["degradation"]}], "degradation", id="degradation"),
        pytest.param([{"reasons": ["degradation"]}, {"reasons": ["drift"]}], "drift+degradation", id="both"),
    ],
)
def test_an_event_triggered_run_says_what_its_events_reported(events, kind):
    assert runtime.trigger_of(_context("asset_triggered", events=events)).kind == kind


@pytest.mark.parametrize(
    ("retrain_on", "drift", "degraded", "force", "trains"),
    [
        pytest.param("always", False, False, False, True, id="always"),
        pytest.param("drift", True, False, False, True, id="drift-drifted"),
        pytest.param("drift", False, True, False, False, id="drift-ignores-a-degraded-champion"),
        pytest.param("degradation", False, True, False, True, id="degradation-degraded"),
        pytest.param("degradation", True, False, False, False, id="degradation-ignores-drift"),
        pytest.param("degradation", False, False, True, True, id="degradation-forced"),
        pytest.param("drift_or_degradation", False, True, False, True, id="either-degraded"),
        pytest.param("drift_or_degradation", False, False, False, False, id="either-neither"),
    ],
)
def test_a_retrain_run_trains_for_what_retrain_on_names(tmp_path, monkeypatch, retrain_on, drift, degraded, force, trains):
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["validation"]["suite"] = str(DEMO_CONFIG.parent / raw["validation"]["suite"])
    raw["orchestration"]["retrain_on"] = retrain_on
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PIPELINE_CONFIG", str(tmp_path / "config.yaml"))
    context = _context("scheduled", {"force": force})
    assert stages.needs_training(context, {"dataset_drift": drift}, {"degraded": degraded}) == trains


class _TaskInstance:
    def __init__(self, xcoms: dict):
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        return self.xcoms.get((task_ids, key))


@pytest.mark.parametrize(
    "xcoms, params, refusal",
    [
        pytest.param({("review", "decision"): {"chosen": "Reject", "user": "bob", "comment": "", "timed_out": False}},
                     {}, "the reviewer chose 'Reject'", id="rejected"),
        pytest.param({("route_approval", "route"): "review"}, {}, "no approval on record", id="review-never-answered"),
        pytest.param({("route_approval", "route"): "auto"}, {"auto_approve": False}, "no approval on record",
                     id="auto-route-without-auto-approval"),
        pytest.param({}, {"auto_approve": True}, "no approval on record", id="nothing-ran-before"),
    ],
)
def test_promote_refuses_without_an_approval_whatever_started_it(monkeypatch, xcoms, params, refusal):
    """Even when a trigger rule lets the task start, it checks the decision before touching the registry."""
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("PIPELINE_CONFIG", str(DEMO_CONFIG))
    context = {**_context("manual", params), "ti": _TaskInstance(xcoms)}
    with pytest.raises(AirflowFailException, match=refusal):
        stages.promote(context, {"cycle_id": "demo_churn-retrain-manual__x", "kind": "retrain", "version": "1"})


def test_as_of_latest_ignores_future_dated_rows(tmp_path):
    import sqlalchemy as sa

    from pipeline.config import load_config
    from tests.conftest import small_frame, write_config

    frame = small_frame(200, days=10)
    frame.loc[:2, "ts"] = pd.Timestamp("2031-06-04")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    config = load_config(write_config(tmp_path), environ={})
    assert runtime.resolve_as_of(config, _context("manual")) == date(2026, 1, 10)


def test_pickling_a_model_in_a_stage_logs_no_deprecated_shim_warnings():
    import warnings
    from contextlib import nullcontext

    import airflow.utils.timezone as shim  # one of Airflow's deprecated-module shims, loaded in every task

    def warnings_while_probing(around) -> list[str]:
        """What ``pickle.whichmodule`` does to every loaded module for a scipy ufunc in a model: ask it for the name."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # as a task's log shows them
            with around:
                getattr(shim, "psi", None)
        return [str(w.message) for w in caught]

    assert any("airflow.utils.timezone.psi" in message for message in warnings_while_probing(nullcontext()))
    assert warnings_while_probing(runtime.shims_quiet()) == []
