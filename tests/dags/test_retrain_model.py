"""retrain_model and monitor_drift end to end under ``dag.test()``, on the demo warehouse's dated drift.

The first tests share one model's history, in order: first champion → a gate rejection →
drift monitoring without and with drift → an approved promotion. Monitoring a champion's quality
for ``retrain_on: degradation`` has stores of its own. (Clearing and re-running
a DAG run is tested on the real scheduler, in test_server.py: dag.test() always makes a new run.) Notifications go to a local SMTP server and a local webhook. The approval
tests at the end start from empty stores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pipeline import catalog, promote, registry
from pipeline.config import load_config
from pipeline.cycle_index import CycleFilter
from tests.dags.harness import DEMO_CONFIG, Reviewer, as_of, dag_config, run_dag, task_states
from tests.dags.receivers import SmtpReceiver, WebhookReceiver


@pytest.fixture(scope="module")
def receivers():
    smtp, webhook = SmtpReceiver(), WebhookReceiver()
    yield smtp, webhook
    smtp.close()
    webhook.close()


@pytest.fixture(scope="module")
def story(tmp_path_factory, airflow_db, warehouse, receivers):
    """One model's stores; the source is read through an Airflow Connection (the config's URL points nowhere)."""
    smtp, webhook = receivers
    directory = tmp_path_factory.mktemp("story")
    notifications = {"email_to": ["ml-team@example.com"], "smtp_conn_id": "smtp_test", "webhook_conn_id": "webhook_test"}
    source = {**_demo_source(), "url": "sqlite:////nonexistent/warehouse.db", "connection_id": "warehouse"}
    config = dag_config(directory, warehouse, source=source, notifications=notifications)
    # The same stores with a margin that no candidate of 03-28 clears.
    strict = dag_config(directory, warehouse, name="strict-gate.yaml", source=source, notifications=notifications,
                        gate={"min_improvement": 0.05})
    environ = {
        "PIPELINE_CONFIG": str(config),
        "AIRFLOW_CONN_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": warehouse.removeprefix("sqlite:///")}),
        "AIRFLOW_CONN_SMTP_TEST": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
                                              "extra": {"disable_ssl": True, "disable_tls": True,
                                                        "from_email": "pipeline@example.com"}}),
        "AIRFLOW_CONN_WEBHOOK_TEST": json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{webhook.port}/hook",
                                                 "password": "hook-token"}),
    }
    saved = {key: os.environ.get(key) for key in environ}
    os.environ.update(environ)
    yield {"config": config, "strict": strict, "smtp": smtp, "webhook": webhook}
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _demo_source() -> dict:
    return yaml.safe_load(DEMO_CONFIG.read_text())["source"]


def _events(receiver, event: str) -> list[dict]:
    return [item["json"] for item in receiver.received if item["json"]["event"] == event]


def _mails(receiver, words: str) -> list[tuple[str, str]]:
    return [(subject, body) for subject, body in receiver.texts() if words in subject]


def test_first_cycle_promotes_the_first_champion(story):
    dag_run = run_dag("retrain_model", {**as_of("2026-02-26"), "auto_approve": True})

    states = task_states(dag_run)
    assert str(dag_run.state) == "success"
    assert states["promote"] == "success" and states["review"] == "skipped" and states["no_training"] == "skipped"
    config = load_config(story["config"])
    assert registry.alias_version(config, registry.CHAMPION).version == "1"
    [entry] = promote.history(config)
    assert entry.action == "promote" and entry.actor == "auto-approval (run triggered by dag_test)"
    [hook] = _events(story["webhook"], "promotion_done")
    assert hook["subject"] == "[demo_churn] v1 promoted to champion"
    assert story["webhook"].received[0]["headers"]["Authorization"] == "Bearer hook-token"
    [(subject, body)] = _mails(story["smtp"], "promoted")
    assert "auto-approval" in body and "promoted v1 (first champion)" in body


def test_gate_rejection_ends_the_run_without_asking(story, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", str(story["strict"]))

    dag_run = run_dag("retrain_model", {**as_of("2026-03-28"), "auto_approve": False})

    states = task_states(dag_run)
    assert str(dag_run.state) == "success"
    assert states["gate"] == "success"
    assert {states[t] for t in ("register", "route_approval", "review", "promote", "record_rejection")} == {"skipped"}
    config = load_config(story["config"])
    assert registry.alias_version(config, registry.CHAMPION).version == "1"
    assert [v.version for v in registry.list_versions(config)] == ["1"]
    [hook] = _events(story["webhook"], "gate_rejected")
    assert "FAIL improvement" in hook["text"] and "must be > 5.0%" in hook["text"]


def test_monitor_without_drift_emits_no_event(story):
    dag_run = run_dag("monitor_drift", as_of("2026-02-26"))

    states = task_states(dag_run)
    assert str(dag_run.state) == "success"
    assert states["drift"] == "success" and states["monitor_model"] == "success" and states["signal_drift"] == "skipped"
    assert _asset_events() == []
    assert _events(story["webhook"], "drift_detected") == []


def test_monitor_with_drift_emits_an_event_that_queues_retraining(story):
    dag_run = run_dag("monitor_drift", as_of("2026-05-28"))

    assert task_states(dag_run)["signal_drift"] == "success"
    [event] = _asset_events()
    extra = event["extra"]
    assert extra["dataset_drift"] is True and extra["as_of"] == "2026-05-28"
    assert {"payment_method", "data_usage_gb", "monthly_charges"} <= set(extra["drifted_features"])
    assert extra["drift_share"] >= 0.2
    # retrain_on: always starts a run early on drift; the champion's quality check rides along.
    assert extra["reasons"] == ["drift"] and extra["quality"]["champion_version"] == "1"
    assert extra["cycle_id"].startswith("demo_churn-monitor-manual__")
    assert Path(extra["report"]).name == "drift.html" and Path(extra["report"]).exists()
    assert event["source_dag_id"] == "monitor_drift"
    assert _queued_consumers() == ["retrain_model"]
    [hook] = _events(story["webhook"], "drift_detected")
    assert "payment_method" in hook["text"]


def test_approval_in_airflow_promotes_and_names_the_reviewer(story):
    with Reviewer("Approve", user="alice", comment="drift explains the gain") as reviewer:
        dag_run = run_dag("retrain_model", {**as_of("2026-05-28"), "auto_approve": False})

    states = task_states(dag_run)
    assert states["review"] == "success" and states["promote"] == "success"
    assert states["record_rejection"] == "skipped"
    config = load_config(story["config"])
    champion = registry.alias_version(config, registry.CHAMPION)
    assert champion.version == "2" and champion.tags["approved_by"] == "alice"
    assert registry.alias_version(config, registry.PREVIOUS).version == "1"
    entry = promote.history(config)[0]
    assert (entry.actor, entry.action, entry.reason) == ("alice", "promote", "drift explains the gain")
    # What the reviewer saw: per-fold numbers against the champion, the drift, the data, the links.
    body = reviewer.body
    assert "| fold | candidate | champion v1 |" in body and "p = " in body
    assert "the gate asks for more than 1.0%" in body and "power to detect 25%" in body
    assert "payment_method" in body and "current: 2026-05-15..2026-05-28" in body
    assert "[Drift report](/pipeline/drift/" in body and "[MLflow run](" in body
    assert "### Candidate and champion v1 on the same" in body
    [hook] = _events(story["webhook"], "approval_waiting")
    assert "/required_actions" in hook["text"]


@pytest.mark.parametrize(
    "action, actor, reason",
    [
        pytest.param("Reject", "bob", "too risky before the holidays", id="rejected"),
        pytest.param("timeout", "approval-timeout", "no answer within 24 h: treated as rejected", id="timed-out"),
    ],
)
def test_no_approval_leaves_the_champion_and_records_why(tmp_path, airflow_db, warehouse, monkeypatch,
                                                         action, actor, reason):
    # An object-store root: every task pulls the run directory from it and pushes what it wrote.
    store = tmp_path / "object-store"
    config = dag_config(tmp_path / "stores", warehouse, storage={"root": store.as_uri()})
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "work"))

    with Reviewer(action, user="bob", comment="too risky before the holidays"):
        dag_run = run_dag("retrain_model", {**as_of("2026-02-26"), "auto_approve": False})

    states = task_states(dag_run)
    assert states["record_rejection"] == "success" and states["promote"] == "skipped"
    loaded = load_config(config)
    assert registry.alias_version(loaded, registry.CHAMPION) is None
    assert registry.alias_version(loaded, registry.CHALLENGER) is None
    [entry] = promote.history(loaded)
    assert (entry.action, entry.actor, entry.reason, entry.to_version) == ("reject", actor, reason, "1")
    [cycle_dir] = (store / "demo_churn").iterdir()
    assert {"current.parquet", "validation.html", "drift.html", "gate.json", "registered.json", "status.json"} <= {
        p.name for p in cycle_dir.iterdir()}
    assert json.loads((cycle_dir / "status.json").read_text())["status"] == "rejected"


@pytest.mark.parametrize(
    "retrain_on, force, status",
    [
        pytest.param("drift", False, "no_drift", id="no-drift-no-training"),
        pytest.param("drift", True, "promoted", id="forced-from-the-form"),
        pytest.param("degradation", False, "not_degraded", id="no-champion-to-degrade-no-training"),
    ],
)
def test_retrain_on_a_check_only_trains_when_it_finds_something_or_forced(tmp_path, airflow_db, warehouse, monkeypatch,
                                                                          retrain_on, force, status):
    config = dag_config(tmp_path, warehouse, orchestration={"retrain_on": retrain_on})
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))

    dag_run = run_dag("retrain_model", {**as_of("2026-02-26"), "force": force, "auto_approve": True})

    states = task_states(dag_run)
    assert str(dag_run.state) == "success"
    trained = status == "promoted"
    assert (states["train"], states["no_training"]) == (("success", "skipped") if trained else ("skipped", "success"))
    [cycle_dir] = (tmp_path / "runs" / "demo_churn").iterdir()
    assert json.loads((cycle_dir / "status.json").read_text())["status"] == status


def test_validation_failure_fails_fast_and_emits_nothing(tmp_path, airflow_db, warehouse, monkeypatch, receivers):
    _, webhook = receivers
    notifications = {"events": ["task_failed"], "webhook_conn_id": "webhook_failures"}
    config = dag_config(tmp_path, warehouse, notifications=notifications)
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_FAILURES", json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{webhook.port}/"}))
    events_before = len(_asset_events())

    dag_run = run_dag("monitor_drift", as_of("2026-08-31"))  # two months after the data ends: an empty window

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["validate"] == "failed" and states["drift"] == "upstream_failed"
    assert _try_number(dag_run, "validate") == 1  # a verdict: not retried
    assert len(_asset_events()) == events_before
    [failure] = [e for e in _events(webhook, "task_failed") if "monitor_drift.validate" in e["subject"]]
    assert "validation stopped" in failure["text"] and "failed_batch.parquet" in failure["text"]
    # The stopped validation is exactly what a reviewer opens: its task links to the page of what was recorded.
    link = _stored_link(dag_run, "validate", "_link_validation_report")
    cycle_id = link.removeprefix("/pipeline/validation/")
    result, kept_batch = catalog.validation(load_config(config), cycle_id)
    assert not result.passed and kept_batch.exists()


def _asset_events() -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [{"extra": e.extra, "source_dag_id": e.source_dag_id}
                for e in session.scalars(select(AssetEvent).order_by(AssetEvent.id)).all()]


def _queued_consumers() -> list[str]:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return sorted(q.target_dag_id for q in session.scalars(select(AssetDagRunQueue)).all())


def _stored_link(dag_run, task_id: str, key: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalars(select(XComModel.value).where(
            XComModel.run_id == dag_run.run_id, XComModel.task_id == task_id, XComModel.key == key)).one()


def _try_number(dag_run, task_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalars(select(TaskInstance.try_number).where(
            TaskInstance.run_id == dag_run.run_id, TaskInstance.task_id == task_id)).one()


def test_an_unreachable_source_is_retried_then_reported_once(tmp_path, airflow_db, warehouse, monkeypatch, receivers):
    _, webhook = receivers
    source = {**_demo_source(), "url": "postgresql+psycopg://nobody@127.0.0.1:9/nowhere"}  # port 9: nothing listens
    notifications = {"events": ["task_failed"], "webhook_conn_id": "webhook_retries"}
    config = dag_config(tmp_path, warehouse, source=source, notifications=notifications)
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_RETRIES", json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{webhook.port}/"}))

    dag_run = run_dag("monitor_drift", as_of("2026-02-26"))

    assert task_states(dag_run)["load"] == "failed"
    assert _try_number(dag_run, "load") == 3  # the first try and orchestration.retries = 2
    [cycle] = catalog.cycle_page(load_config(config)).cycles
    assert cycle.status == "failed"  # recorded by the last try, not left "running"
    [failure] = [e for e in _events(webhook, "task_failed") if "monitor_drift.load" in e["subject"]]
    assert "try 3" in failure["text"] and "cannot read table 'demo_churn' from postgresql+psycopg://nobody@127.0.0.1:9/nowhere" in failure["text"]


def test_each_task_parses_the_config_once_and_fetches_only_what_it_reads(tmp_path, airflow_db, warehouse, monkeypatch):
    """On an object-store root, the decision tasks move small JSON only; the config is parsed once per process."""
    from orchestration import runtime
    from pipeline import config as pipeline_config
    from pipeline.storage import RunStorage

    store = tmp_path / "object-store"
    config = dag_config(tmp_path / "stores", warehouse, storage={"root": store.as_uri()})
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "work"))
    runtime._file_config.cache_clear()
    runtime._task_config.cache_clear()

    def task() -> str | None:
        return os.environ.get("AIRFLOW_CTX_TASK_ID")  # set by Airflow's task runner for the task it runs

    loads, fetched, written = [], [], []
    load_config, fetch, write_bytes = pipeline_config.load_config, RunStorage.fetch, RunStorage.write_bytes
    monkeypatch.setattr(pipeline_config, "load_config", lambda *a, **k: loads.append(task()) or load_config(*a, **k))

    def fetching(storage, name):
        if name not in storage._fetched:
            fetched.append((task(), name))
        return fetch(storage, name)

    monkeypatch.setattr(RunStorage, "fetch", fetching)
    monkeypatch.setattr(RunStorage, "write_bytes", lambda s, name, content: written.append((task(), name)) or write_bytes(s, name, content))

    with Reviewer("Approve", user="alice"):
        dag_run = run_dag("retrain_model", {**as_of("2026-02-26"), "auto_approve": False})

    ran = [task_id for task_id, state in task_states(dag_run).items() if state == "success"]
    assert {"load", "validate", "drift", "train", "gate", "register", "route_approval", "review", "promote"} <= set(ran)
    assert 1 <= len(loads) <= len(ran), loads  # once per process here; a real executor runs each task in its own
    assert [entry for entry in written if entry[1] == "config.yaml"] == [("load", "config.yaml")]  # recorded once
    parquet = {(t, name) for t, name in fetched if name.endswith(".parquet")}
    assert {t for t, _ in parquet} == {"validate", "drift", "train", "register"}, sorted(fetched)
    for decision_task in ("gate", "route_approval", "review", "promote"):
        assert {name for t, name in fetched if t == decision_task} <= {
            "status.json", "trigger.json", "windows.json", "validation.json", "drift.json", "quality.json",
            "evaluation.json", "gate.json", "evidence.json", "earlier_versions.json", "importance.json", "registered.json",
            "approval.json", "search.json"}, decision_task


@pytest.fixture(scope="module")
def watched(tmp_path_factory, airflow_db, warehouse):
    """``retrain_on: degradation`` with champion v1, trained on 02-13..02-26, before the demo's concept drift of 05-01."""
    from datetime import date

    from pipeline.cycle import run_cycle

    config = dag_config(tmp_path_factory.mktemp("watched"), warehouse, orchestration={"retrain_on": "degradation"},
                        promotion={"approval": "auto"})
    assert run_cycle(load_config(config), date(2026, 2, 26)).version.version == "1"
    return config


@pytest.mark.parametrize(
    "day, status",
    [
        pytest.param("2026-05-28", "degraded", id="a-degraded-champion-emits-the-event"),
        # The covariate shift of 03-01 drifts the data, but the relation holds: the champion does too.
        pytest.param("2026-03-28", "drift_detected", id="a-healthy-champion-does-not-even-under-drift"),
    ],
)
def test_retrain_on_degradation_signals_only_a_degraded_champion(watched, monkeypatch, day, status):
    monkeypatch.setenv("PIPELINE_CONFIG", str(watched))
    events_before = len(_asset_events())

    dag_run = run_dag("monitor_drift", as_of(day))

    states = task_states(dag_run)
    assert str(dag_run.state) == "success" and states["monitor_model"] == "success"
    [cycle] = [c for c in catalog.cycle_page(load_config(watched), CycleFilter(kind="monitor")).cycles
               if c.airflow_run_id == dag_run.run_id]
    assert cycle.status == status and cycle.quality_champion == "1" and cycle.live_value is not None
    events = _asset_events()[events_before:]
    if status != "degraded":
        assert cycle.dataset_drift and cycle.quality == "healthy"
        assert states["signal_drift"] == "skipped" and events == []
        return
    assert states["signal_drift"] == "success"
    [event] = events
    quality = event["extra"]["quality"]
    assert event["extra"]["reasons"] == ["degradation"] and event["extra"]["as_of"] == day
    assert quality["degraded"] and quality["champion_version"] == "1" and quality["degradation_lower"] > 0.1
    assert quality["live_value"] == pytest.approx(cycle.live_value) and quality["kfold_value"] > quality["live_value"]
