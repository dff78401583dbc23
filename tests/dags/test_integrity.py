"""The DAG files: they import cleanly and fast, with the expected graph, tags, retries and trigger form."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from tests.dags.harness import DAGS, DEMO_CONFIG

# Tasks that take the cycle's handle from `load` (or the registration from `register`) hang from it.
EXPECTED_EDGES = {
    "monitor_drift": {
        "load": {"validate", "drift", "monitor_model"}, "validate": {"drift"}, "drift": {"monitor_model"},
        "monitor_model": {"signal_drift"}, "signal_drift": set(),
    },
    "retrain_model": {
        "load": {"validate", "drift", "monitor_model", "no_training", "train", "gate", "register"},
        "validate": {"drift"}, "drift": {"monitor_model"}, "monitor_model": {"train", "no_training"},
        "no_training": set(), "train": {"gate"}, "gate": {"register"},
        "register": {"route_approval", "promote", "record_rejection"},
        "route_approval": {"review", "promote"}, "review": {"promote", "record_rejection"},
        "promote": set(), "record_rejection": set(),
    },
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=DAGS)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED_EDGES)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_EDGES))
def test_graph_tags_and_retries(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert {task.task_id: set(task.downstream_task_ids) for task in dag.tasks} == EXPECTED_EDGES[dag_id]
    assert "ml" in dag.tags and "demo_churn" in dag.tags
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.doc_md
    assert dag.owner == "ml-platform"
    retried = {task.task_id: task.retries for task in dag.tasks}
    # Faults are retried with backoff; the human question is never asked twice.
    assert all(retries == 2 for task_id, retries in retried.items() if task_id != "review")
    assert all(task.retry_exponential_backoff for task in dag.tasks if task.retries)


def test_retrain_runs_nightly_and_on_drift(dagbag):
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.dags["retrain_model"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.timetable.expression == "0 2 * * *"
    assert [asset.name for asset in dag.timetable.asset_condition.objects] == ["demo_churn.drift_detected"]
    outlets = dagbag.dags["monitor_drift"].get_task("signal_drift").outlets
    assert [asset.name for asset in outlets] == ["demo_churn.drift_detected"]


def test_promote_needs_an_explicit_route_and_review_defaults_to_reject(dagbag):
    dag = dagbag.dags["retrain_model"]
    review = dag.get_task("review")
    assert review.defaults == ["Reject"]  # a timeout applies the defaults: never an approval
    assert review.options_mapping == {"Approve": "promote", "Reject": "record_rejection"}
    assert set(review.params) == {"comment"}
    assert review.response_timeout.total_seconds() == 24 * 3600


@pytest.mark.parametrize(
    "conf, problem",
    [
        pytest.param({"k": 1}, "1 is less than the minimum of 2", id="k-below-2"),
        pytest.param({"family": "ridge"}, "'ridge' is not one of", id="family-not-for-classification"),
        pytest.param({"as_of": "yesterday"}, "'yesterday' is not a 'date'", id="as-of-not-a-date"),
        pytest.param({"force": "yes"}, "'yes' is not of type 'boolean'", id="force-not-boolean"),
        pytest.param({"tune_trials": -1}, "-1 is less than the minimum of 0", id="tune-trials-negative"),
    ],
)
def test_trigger_form_refuses_invalid_values(dagbag, conf, problem):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["retrain_model"].params)
    with pytest.raises(ParamValidationError, match=problem):
        params.update(conf)
        params.validate()


def test_trigger_form_accepts_defaults_and_a_date(dagbag):
    params = copy.deepcopy(dagbag.dags["retrain_model"].params)
    params.update({"as_of": "2026-05-28", "k": 3, "tune_trials": 20})
    assert params.validate() == {"as_of": "2026-05-28", "force": False, "family": "xgboost", "k": 3,
                                 "tune_trials": 20, "auto_approve": True, "note": None}


def test_train_runs_on_the_default_queue_unless_the_config_names_one(dagbag, tmp_path, monkeypatch):
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    default_queue = conf.get("operators", "default_queue")
    assert {task.queue for task in dagbag.dags["retrain_model"].tasks} == {default_queue}

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["validation"]["suite"] = str(DEMO_CONFIG.parent / raw["validation"]["suite"])
    raw["training"]["queue"] = "gpu"
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    routed = DagBag(dag_folder=DAGS / "retrain_model.py").dags["retrain_model"]
    queues = {task.task_id: task.queue for task in routed.tasks}
    assert queues.pop("train") == "gpu"
    assert set(queues.values()) == {default_queue}  # only training lands on the GPU worker


HEAVY = ("pandas", "xgboost", "great_expectations", "evidently", "mlflow", "sklearn")


@pytest.mark.parametrize("dag_file", ["monitor_drift.py", "retrain_model.py"])
def test_parse_time_is_reported_and_heavy_imports_wait_for_tasks(dag_file, record_property):
    """Parse time in a fresh interpreter, the way the dag processor pays it (reported, not asserted)."""
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import airflow.sdk; "
        "from airflow.dag_processing.dagbag import DagBag; started = time.perf_counter(); "
        "bag = DagBag(dag_folder=sys.argv[2]); seconds = time.perf_counter() - started; "
        "assert not bag.import_errors, bag.import_errors; "
        f"print(seconds, *[m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", script, str(DAGS), str(DAGS / dag_file)],
                         capture_output=True, text=True, check=True)
    seconds, *heavy_loaded = out.stdout.strip().splitlines()[-1].split()
    record_property("parse_seconds", float(seconds))
    print(f"{dag_file} parsed in {float(seconds):.3f}s")
    assert heavy_loaded == [], f"{dag_file} imports {heavy_loaded} at parse time"


def test_optional_text_fields_may_stay_empty(dagbag):
    """Airflow's forms treat a string parameter without "null" in its type as required: Trigger/Approve stay disabled."""
    dag = dagbag.dags["retrain_model"]
    forms = {"trigger": dag.params, "review": dag.get_task("review").params}
    for form, params in forms.items():
        for name in params:
            schema = params.get_param(name).schema
            if "string" in schema.get("type", []) and params.get_param(name).value in (None, ""):
                assert "null" in schema["type"], f"{form} form: {name!r} would be a required field"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_EDGES))
def test_drift_and_validation_tasks_link_to_their_review_pages(dagbag, dag_id):
    """What the api-server sees: the serialized DAG, whose links read the URL the worker stored."""
    from airflow.serialization.serialized_objects import DagSerialization

    served = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id]))
    links = {task.task_id: task.extra_links for task in served.tasks if task.extra_links}
    assert links == {"validate": ["Validation report"], "drift": ["Drift report"]}
    kind = "monitor" if dag_id == "monitor_drift" else "retrain"
    link = dagbag.dags[dag_id].get_task("drift").operator_extra_links[0]
    ti_key = type("Key", (), {"run_id": "manual__2026-05-28T00:00:00+00:00"})()
    assert link.get_link(None, ti_key=ti_key) == f"/pipeline/drift/demo_churn-{kind}-manual__2026-05-28T00-00-00-00-00"


def test_the_dags_parse_with_the_production_config_and_the_stacks_environment(monkeypatch):
    """What the containers of docker-compose.yml parse: production.yaml, its URLs overridden by PIPELINE_* variables."""
    from airflow.dag_processing.dagbag import DagBag

    compose = yaml.safe_load((DAGS.parent / "docker-compose.yml").read_text())
    stack_env = compose["x-airflow-common"]["environment"]
    monkeypatch.setenv("PIPELINE_CONFIG", str(DAGS.parent / "pipeline" / "configs" / "production.yaml"))
    for name in ("PIPELINE_SOURCE_URL", "PIPELINE_TRACKING_URI", "PIPELINE_DATABASE_URL", "PIPELINE_STORAGE_ROOT"):
        monkeypatch.setenv(name, stack_env[name].replace("${", "{"))  # the compose placeholders, unresolved
    parsed = DagBag(dag_folder=DAGS)
    assert parsed.import_errors == {} and set(parsed.dag_ids) == set(EXPECTED_EDGES)
    retrain = parsed.dags["retrain_model"]
    assert retrain.params["auto_approve"] is False  # production asks a person
    assert retrain.get_task("train").queue == retrain.get_task("load").queue  # no GPU queue unless configured
