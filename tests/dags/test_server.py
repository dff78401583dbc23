"""The DAGs on a real Airflow (api-server, scheduler, dag-processor on 127.0.0.1), driven with Airflow's official REST client.

One story, bounded in time: trigger retrain_model with the form's values → its train task is
killed mid-stage (SIGKILL) and retried → approve in Required Actions → champion moves; clear and
re-run the run → nothing duplicated; then
monitor_drift finds drift → its asset event starts retrain_model → reject → champion stays.
"""

from __future__ import annotations

import pytest

from orchestration.servers import UNSCHEDULED, AirflowServer, dags_parsed, finished_state, wait_for
from pipeline import promote, registry
from pipeline.config import load_config
from tests.dags.harness import dag_config
from tests.dags.server import answer, asset_triggered_run, failed_tasks, kill_task_when_logged, task_state

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, warehouse):
    directory = tmp_path_factory.mktemp("server")
    config = dag_config(directory / "stores", warehouse, orchestration=UNSCHEDULED)
    with AirflowServer(directory / "airflow-home", config) as server:
        server.config = config
        yield server


def test_trigger_approve_rerun_then_drift_triggers_a_run_that_is_rejected(airflow):
    import airflow_client.client as ac

    admin, alice = airflow.client("admin"), airflow.client("alice")
    runs = ac.DagRunApi(admin)
    wait_for("the DAGs parsed", lambda: dags_parsed(admin), airflow, timeout_s=120)

    # The trigger form's schema is enforced by the API.
    with pytest.raises(ac.ApiException) as refused:
        runs.trigger_dag_run("retrain_model", ac.TriggerDAGRunPostBody(logical_date=None, conf={"k": 1}))
    assert refused.value.status == 400 and "minimum" in refused.value.body

    run = runs.trigger_dag_run("retrain_model", ac.TriggerDAGRunPostBody(
        logical_date=None, conf={"as_of": "2026-02-26", "auto_approve": False, "note": "first model"}))
    # A worker dies in the middle of the k-fold training: Airflow retries the task, which starts the stage over.
    kill_task_when_logged(airflow, admin, "retrain_model", run.dag_run_id, "train", "[train] fold 2/3")
    wait_for("review awaiting input",
             lambda: task_state(admin, "retrain_model", run.dag_run_id, "review") == "awaiting_input" or None, airflow)
    detail = ac.TaskInstanceApi(admin).get_hitl_detail("retrain_model", run.dag_run_id, "review", -1)
    assert detail.subject.startswith("Promote demo_churn v1 (first champion, as of 2026-02-26)")
    assert "### Gate PASSED" in detail.body and "note: first model" in detail.body
    pending = ac.TaskInstanceApi(admin).get_hitl_details("~", "~", response_received=False)
    assert [d.task_instance.dag_run_id for d in pending.hitl_details] == [run.dag_run_id]

    # Answering needs an Airflow login: with no token or a forged one the answer is refused, the question stays.
    refusals = []
    for token in (None, "forged-token"):
        stranger = ac.ApiClient(ac.Configuration(host=airflow.url, access_token=token))
        with pytest.raises(ac.ApiException) as refused:
            ac.TaskInstanceApi(stranger).update_hitl_detail("retrain_model", run.dag_run_id, "review", -1,
                                                            ac.UpdateHITLDetailPayload(chosen_options=["Approve"]))
        refusals.append(refused.value.status)
    assert refusals == [401, 403]
    assert task_state(admin, "retrain_model", run.dag_run_id, "review") == "awaiting_input"

    answer(airflow, alice, "retrain_model", run.dag_run_id, "Approve", "looks good")
    with pytest.raises(ac.ApiException) as twice:
        answer(airflow, alice, "retrain_model", run.dag_run_id, "Approve", "again")
    assert twice.value.status == 409
    assert wait_for("the run finished", lambda: finished_state(runs, "retrain_model", run.dag_run_id), airflow) == "success"
    config = load_config(airflow.config)
    train = ac.TaskInstanceApi(admin).get_task_instance("retrain_model", run.dag_run_id, "train")
    assert (train.state.value, train.try_number) == ("success", 2)
    train_log = next(airflow.home.glob(f"logs/dag_id=retrain_model/run_id={run.dag_run_id}/task_id=train/attempt=2.log"))
    assert "[train] final fit" in train_log.read_text() and "attribute is deprecated" not in train_log.read_text()
    assert registry.alias_version(config, registry.CHAMPION).version == "1"
    assert [v.version for v in registry.list_versions(config)] == ["1"]
    [mlflow_run] = registry.find_runs(config, "retrain", max_results=10)
    assert (mlflow_run.info.status, mlflow_run.data.tags["cycle.status"]) == ("FINISHED", "promoted")
    [entry] = promote.history(config)
    assert (entry.actor, entry.action, entry.reason) == ("alice", "promote", "looks good")

    # Clearing and re-running every task but the question: same MLflow run, same version, one log row.
    mlflow_runs = [r.info.run_id for r in registry.find_runs(config, "retrain", max_results=10)]
    ac.TaskInstanceApi(admin).post_clear_task_instances("retrain_model", ac.ClearTaskInstancesBody(
        dag_run_id=run.dag_run_id, dry_run=False, only_failed=False, reset_dag_runs=True,
        task_ids=[ac.ClearTaskInstancesBodyTaskIdsInner(task) for task in
                  ("load", "validate", "drift", "train", "gate", "register", "route_approval", "promote")]))
    wait_for("the cleared run restarted", lambda: finished_state(runs, "retrain_model", run.dag_run_id) is None or None,
             airflow, timeout_s=60, every_s=0.5)
    rerun = wait_for("the re-run finished", lambda: finished_state(runs, "retrain_model", run.dag_run_id), airflow)
    assert rerun == "success", failed_tasks(airflow, admin, "retrain_model", run.dag_run_id)
    assert [r.info.run_id for r in registry.find_runs(config, "retrain", max_results=10)] == mlflow_runs
    assert [v.version for v in registry.list_versions(config)] == ["1"]
    assert len(promote.history(config)) == 1

    # Drift in the current data starts retraining through the asset event.
    monitor = runs.trigger_dag_run("monitor_drift", ac.TriggerDAGRunPostBody(logical_date=None, conf={"as_of": "2026-05-28"}))
    assert wait_for("monitor finished", lambda: finished_state(runs, "monitor_drift", monitor.dag_run_id), airflow) == "success"
    triggered = wait_for("a drift-triggered retrain run", lambda: asset_triggered_run(runs), airflow, timeout_s=120)
    wait_for("review of the drift run awaiting input",
             lambda: task_state(admin, "retrain_model", triggered, "review") == "awaiting_input" or None, airflow)
    upstream = runs.get_upstream_asset_events("retrain_model", triggered).asset_events
    assert [e.extra["as_of"] for e in upstream] == ["2026-05-28"]
    body = ac.TaskInstanceApi(admin).get_hitl_detail("retrain_model", triggered, "review", -1).body
    assert "drift event from monitor_drift/" in body and "payment_method" in body and "champion v1" in body

    answer(airflow, alice, "retrain_model", triggered, "Reject", "wait for the quarter close")
    assert wait_for("the drift run finished", lambda: finished_state(runs, "retrain_model", triggered), airflow) == "success"
    assert task_state(admin, "retrain_model", triggered, "promote") == "skipped"
    assert registry.alias_version(config, registry.CHAMPION).version == "1"
    latest = promote.history(config)[0]
    assert (latest.action, latest.actor, latest.reason, latest.to_version) == ("reject", "alice", "wait for the quarter close", "2")
    xcom = ac.XComApi(admin).get_xcom_entry("retrain_model", "load", triggered, "return_value", deserialize=True)
    assert xcom.actual_instance.value["trigger"] == "drift" and xcom.actual_instance.value["as_of"] == "2026-05-28"

