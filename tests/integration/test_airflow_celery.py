"""The DAGs on a production-shaped Airflow: metadata DB on PostgreSQL, CeleryExecutor on the local Redis.

api-server, scheduler, dag-processor and an ``airflow celery worker`` run as real processes on
127.0.0.1 (tests/dags/server.py), driven through Airflow's official REST client. Everything is
private to this module: a fresh PostgreSQL database for Airflow's metadata (also Celery's result
backend), a second one for the promotion log (the arbiter of promotions), an unused Redis DB
number and a queue name of their own (so no other Celery worker on this Redis can take our
tasks). Both databases are dropped, the Redis DB flushed and every process group killed at the end.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are required: when either is unreachable the
module fails loudly instead of skipping, so CI cannot silently stop testing this.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets

import pytest
import sqlalchemy as sa

from orchestration.servers import UNSCHEDULED, AirflowServer, dags_parsed, finished_state, group_alive, wait_for
from pipeline import promote, registry
from pipeline.config import load_config
from tests.dags.harness import dag_config
from tests.dags.server import answer, task_state
from tests.integration.services import postgres_database

pytestmark = pytest.mark.timeout(900)

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_CLAIM = "airflow-celery-test:claimed-by"
# Every task the first run executes on a worker before it parks at the review.
BEFORE_REVIEW = ("load", "validate", "drift", "monitor_model", "train", "gate", "register", "route_approval")


def _claim_redis_db(token: str):
    """A Redis DB number nobody uses (empty), claimed with SET NX so a parallel test cannot take the same one."""
    import redis

    try:
        redis.Redis.from_url(f"{REDIS}/0", socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required for this test and is unreachable at {REDIS}: {exc}", pytrace=False)
    candidates = list(range(1, 16))
    secrets.SystemRandom().shuffle(candidates)
    for number in candidates:
        db = redis.Redis.from_url(f"{REDIS}/{number}", socket_timeout=5)
        if db.dbsize() == 0 and db.set(REDIS_CLAIM, token, nx=True):
            return number, db
    pytest.fail(f"no empty Redis DB among 1..15 at {REDIS} to run Celery's broker in", pytrace=False)


@pytest.fixture(scope="module")
def services(postgres):
    """Private databases on the real services; dropped/flushed afterwards."""
    token = secrets.token_hex(4)
    redis_db, redis_client = _claim_redis_db(token)
    try:
        with postgres_database("airflow") as metadata_url, postgres_database("promotion") as promotion_url:
            yield {
                "token": token, "metadata_url": metadata_url, "promotion_url": promotion_url,
                "broker_url": f"{REDIS}/{redis_db}", "queue": f"airflow-test-{token}",
            }
    finally:
        # Only the DB this module claimed (and only if the claim is still ours): never FLUSHALL.
        if redis_client.get(REDIS_CLAIM) == token.encode():
            redis_client.flushdb()
        redis_client.close()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, warehouse, services):
    directory = tmp_path_factory.mktemp("celery")
    config = dag_config(directory / "stores", warehouse,
                        promotion={"database_url": services["promotion_url"]}, orchestration=UNSCHEDULED)
    env = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": services["metadata_url"],
        # Otherwise Airflow derives postgresql+asyncpg, which is not installed; psycopg 3 does async too.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": services["metadata_url"],
        # Others share this PostgreSQL (max_connections 100): small pools per component.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
        "AIRFLOW__CELERY__BROKER_URL": services["broker_url"],
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{services['metadata_url']}",
        # The provider's queue setting: tasks get it at parse time and the worker consumes only it.
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": services["queue"],
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        # The promotion log in PostgreSQL for every task, whatever the file says.
        "PIPELINE_DATABASE_URL": services["promotion_url"],
    }
    server = AirflowServer(directory / "airflow-home", config, env=env, celery_worker=True)
    with server:
        server.config = config
        server.services = services
        yield server
    # Every process group this module started is gone (the leaders were reaped by stop()).
    left = [process.args for process in server.processes if group_alive(process.pid)]
    assert not left, f"processes left running: {left}"


def trigger(client, conf: dict) -> str:
    import airflow_client.client as ac

    return ac.DagRunApi(client).trigger_dag_run(
        "retrain_model", ac.TriggerDAGRunPostBody(logical_date=None, conf=conf)).dag_run_id


def celery_executed(server: AirflowServer, run_id: str) -> set[str]:
    """The task ids of ``run_id`` that the Celery worker logged executing."""
    lines = (server.home / "celery-worker.log").read_text(errors="replace").splitlines()
    found = (re.search(r"ti=TaskInstanceDTO\(.*?task_id='([^']+)', dag_id='retrain_model', run_id='([^']+)'", line)
             for line in lines if "Executing workload in Celery" in line)
    return {m.group(1) for m in found if m and m.group(2) == run_id}


def celery_results(metadata_url: str, run_id: str) -> dict[str, str]:
    """Per task of the run (first attempts, before the review): the state Celery's result backend holds for the
    Celery task the scheduler sent it as (``external_executor_id`` is that Celery task id)."""
    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT ti.task_id, meta.status FROM task_instance ti"
                " JOIN celery_taskmeta meta ON meta.task_id = ti.external_executor_id"
                " WHERE ti.dag_id = 'retrain_model' AND ti.run_id = :run AND ti.task_id != 'review'"), {"run": run_id})
            return dict(rows.all())
    finally:
        engine.dispose()


def promotion_rows(url: str) -> list[tuple]:
    """The promotion log read straight from its PostgreSQL database, oldest first."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(
                "SELECT seq, actor, action, from_version, to_version, reason FROM promotion_log ORDER BY seq"))]
    finally:
        engine.dispose()


def test_celery_worker_runs_the_tasks_and_a_rest_approval_promotes_into_the_postgres_log(airflow):
    import airflow_client.client as ac

    admin, alice = airflow.client("admin"), airflow.client("alice")
    wait_for("the DAGs parsed", lambda: dags_parsed(admin), airflow, timeout_s=180)

    run_id = trigger(admin, {"as_of": "2026-02-26", "auto_approve": False})
    wait_for("review awaiting input",
             lambda: task_state(admin, "retrain_model", run_id, "review") == "awaiting_input" or None,
             airflow, timeout_s=400)

    # CeleryExecutor really ran the tasks, seen three ways: every task went to this module's own queue (REST);
    # the Celery worker's log shows it executing each task of this run; and for each task instance the
    # scheduler recorded a Celery task id whose result the worker wrote as SUCCESS into Celery's result
    # backend. A LocalExecutor writes none of these, and no other worker consumes our queue.
    instances = {ti.task_id: ti for ti in
                 ac.TaskInstanceApi(admin).get_task_instances("retrain_model", run_id).task_instances}
    assert {task: instances[task].queue for task in BEFORE_REVIEW} == dict.fromkeys(BEFORE_REVIEW, airflow.services["queue"])
    assert set(BEFORE_REVIEW) | {"review"} <= celery_executed(airflow, run_id), airflow.log_tail("celery-worker")
    # Airflow marks a task done when the task runner reports; the worker writes Celery's SUCCESS a moment later.
    all_succeeded = dict.fromkeys(BEFORE_REVIEW, "SUCCESS")
    last_seen: dict[str, str] = {}

    def every_result_written():
        last_seen.update(celery_results(airflow.services["metadata_url"], run_id))
        return True if last_seen == all_succeeded else None

    with contextlib.suppress(TimeoutError):  # the assertion below shows what was still missing
        wait_for("Celery's SUCCESS for every task", every_result_written, airflow, timeout_s=60, every_s=1)
    assert last_seen == all_succeeded

    answer(airflow, alice, "retrain_model", run_id, "Approve", "first champion, checked on Celery")
    runs = ac.DagRunApi(admin)
    assert wait_for("the run finished", lambda: finished_state(runs, "retrain_model", run_id), airflow) == "success"
    assert "promote" in celery_executed(airflow, run_id)

    config = load_config(airflow.config)
    assert config.promotion.database_url == airflow.services["promotion_url"]
    assert registry.alias_version(config, registry.CHAMPION).version == "1"
    [entry] = promote.history(config)
    assert (entry.actor, entry.action, entry.from_version, entry.to_version, entry.reason) == (
        "alice", "promote", None, "1", "first champion, checked on Celery")
    assert promotion_rows(airflow.services["promotion_url"]) == [
        (1, "alice", "promote", None, "1", "first champion, checked on Celery")]


def test_two_runs_triggered_at_once_run_one_after_the_other_and_promote_once(airflow):
    """max_active_runs=1 on the real scheduler: the second run waits queued while the first awaits approval,
    then trains and is gated against the champion the first one promoted — never against the old one."""
    import airflow_client.client as ac

    admin, alice = airflow.client("admin"), airflow.client("alice")
    runs = ac.DagRunApi(admin)
    config = load_config(airflow.config)
    assert registry.alias_version(config, registry.CHAMPION).version == "1"  # from the test above

    # Both want to replace v1 with a model of May's data: run concurrently they would both pass the gate
    # against v1 and both ask to promote.
    first = trigger(admin, {"as_of": "2026-05-28", "auto_approve": False, "note": "first of two"})
    second = trigger(admin, {"as_of": "2026-05-28", "auto_approve": False, "note": "second of two"})
    observed: list[dict[str, str]] = []

    def states_until(done):
        """Poll both runs' states (recording each observation) until ``done()`` holds."""
        def check():
            observed.append({r.dag_run_id: str(r.state.value)
                             for r in runs.get_dag_runs("retrain_model").dag_runs if r.dag_run_id in (first, second)})
            return done() or None
        return check

    wait_for("the first run's review awaiting input",
             states_until(lambda: task_state(admin, "retrain_model", first, "review") == "awaiting_input"),
             airflow, timeout_s=400, every_s=1)
    # While the first run holds the slot (even parked at the review), the second has not started.
    assert str(runs.get_dag_run("retrain_model", second).state.value) == "queued"
    # Its task instances exist from the trigger on, but none was scheduled, queued or started.
    second_tis = ac.TaskInstanceApi(admin).get_task_instances("retrain_model", second).task_instances
    assert second_tis and {(ti.state, ti.try_number) for ti in second_tis} == {(None, 0)}

    answer(airflow, alice, "retrain_model", first, "Approve", "May beats v1")
    wait_for("the second run finished", states_until(
        lambda: finished_state(runs, "retrain_model", second) is not None
        or task_state(admin, "retrain_model", second, "review") == "awaiting_input"),
        airflow, timeout_s=400, every_s=1)

    running_at_once = max(sum(state == "running" for state in seen.values()) for seen in observed)
    assert running_at_once == 1, observed
    assert any(seen.get(second) == "running" for seen in observed)  # the second did run, after the first
    assert finished_state(runs, "retrain_model", first) == "success"
    # The second run's gate compared its candidate with v2, the champion the first run had just promoted;
    # the same data trains the same model, so it cannot beat v2: rejected at the gate, nothing asked.
    verdict = ac.XComApi(admin).get_xcom_entry("retrain_model", "gate", second, "verdict", deserialize=True)
    verdict = verdict.actual_instance.value
    assert verdict["champion_version"] == "2" and verdict["passed"] is False, verdict
    assert finished_state(runs, "retrain_model", second) == "success"
    assert task_state(admin, "retrain_model", second, "register") == "skipped"

    assert registry.alias_version(config, registry.CHAMPION).version == "2"
    expected = [
        (1, "alice", "promote", None, "1", "first champion, checked on Celery"),
        (2, "alice", "promote", "1", "2", "May beats v1"),
    ]
    assert promotion_rows(airflow.services["promotion_url"]) == expected
    assert [(e.seq, e.actor, e.action, e.from_version, e.to_version, e.reason)
            for e in reversed(promote.history(config))] == expected
