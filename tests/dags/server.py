"""A real Airflow on 127.0.0.1 for the tests: api-server, scheduler and dag-processor in their own home, stopped afterwards.

By default LocalExecutor on SQLite; ``env`` overrides any setting (e.g. a PostgreSQL metadata DB and
CeleryExecutor) and ``celery_worker=True`` also starts an ``airflow celery worker`` with the same env.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.dags.harness import DAGS, ROOT
from tests.processes import free_port, stop_group, wait_until_serving

AIRFLOW = str(Path(sys.executable).parent / "airflow")
# Schedules whose last tick lies before the DAGs' start: a test server's scheduler starts no run of its own
# (with catchup off it would start the latest tick's run at once, and max_active_runs=1 would queue the test's).
UNSCHEDULED = {"monitor_schedule": "0 0 29 2 *", "retrain_schedule": "0 0 29 2 *"}
COMPONENTS = ("api-server", "scheduler", "dag-processor")
CELERY_WORKER = "celery-worker"


class AirflowServer:
    """Starts the components with LocalExecutor on SQLite (parallelism 4) and stops every process it started.

    ``env`` is laid over the defaults for every component (and ``airflow db migrate``);
    ``celery_worker`` adds ``airflow celery worker`` (log: ``celery-worker.log`` in the home).
    """

    def __init__(self, home: Path, pipeline_config: Path, users: str = "admin:admin,alice:admin",
                 env: Mapping[str, str] | None = None, celery_worker: bool = False):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PIPELINE_CONFIG": str(pipeline_config),
            **(env or {}),
        }
        self.components: tuple[str, ...] = COMPONENTS + ((CELERY_WORKER,) if celery_worker else ())
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> AirflowServer:
        self.home.mkdir(parents=True, exist_ok=True)
        migrated = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True)
        if migrated.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{migrated.stderr.decode(errors='replace')[-3000:]}")
        try:
            for component in self.components:
                # Each in its own session, so stop() can signal the component and every child it forked.
                with open(self.home / f"{component}.log", "wb") as log:
                    self.processes.append(subprocess.Popen(
                        [AIRFLOW, "celery", "worker"] if component == CELERY_WORKER else [AIRFLOW, component],
                        env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    ))
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for process in self.processes:
            stop_group(process, timeout_s=30)

    def _wait_healthy(self, timeout_s: float = 120) -> None:
        components = dict(zip((f"airflow {c}" for c in self.components), self.processes, strict=True))
        wait_until_serving(f"{self.url}/api/v2/monitor/health", components,
                           lambda name: self.log_tail(name.removeprefix("airflow ")), timeout_s)

    def log_tail(self, component: str, lines: int = 30) -> str:
        text = (self.home / f"{component}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def password(self, user: str) -> str:
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())[user]

    def token(self, user: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=json.dumps({"username": user, "password": self.password(user)}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def client(self, user: str):
        """Airflow's official REST client, authenticated as ``user``."""
        import airflow_client.client as airflow_client

        configuration = airflow_client.Configuration(host=self.url, access_token=self.token(user))
        return airflow_client.ApiClient(configuration)


def wait_for(what: str, check, server: AirflowServer, timeout_s: float = 240, every_s: float = 2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"{what} did not happen within {timeout_s}s\n{server.log_tail('scheduler')}")


def finished_state(api, dag_id: str, run_id: str):
    state = str(api.get_dag_run(dag_id, run_id).state.value)
    return state if state in ("success", "failed") else None


def failed_tasks(server: AirflowServer, client, dag_id: str, run_id: str, lines: int = 40) -> str:
    """The run's failed tasks with their last attempt's log tail: what a failed run's assertion says."""
    import airflow_client.client as ac

    instances = ac.TaskInstanceApi(client).get_task_instances(dag_id, run_id).task_instances
    failed = [ti for ti in instances if ti.state and ti.state.value in ("failed", "upstream_failed")]
    parts = []
    for ti in failed:
        logs = sorted(server.home.glob(f"logs/dag_id={dag_id}/run_id={run_id}/task_id={ti.task_id}/attempt=*.log"))
        tail = "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else "(no log)"
        parts.append(f"--- {ti.task_id}: {ti.state.value}, try {ti.try_number}\n{tail}")
    return "\n".join(parts) or "no task failed"


def task_state(client, dag_id: str, run_id: str, task_id: str) -> str | None:
    import airflow_client.client as ac

    state = ac.TaskInstanceApi(client).get_task_instance(dag_id, run_id, task_id).state
    return state.value if state else None


def answer(server: AirflowServer, client, dag_id: str, run_id: str, option: str, comment: str):
    """Answer as a reviewer in Required Actions would: after the scheduler has seen the question parked.

    Airflow 3.3.2 races when an answer resumes the task before the scheduler has processed the executor's
    event for the parked attempt: it marks the task failed (apache/airflow#66374, #71502, seen here for
    awaiting_input). That fails safe (nothing is promoted); the test waits for that event in the
    scheduler's log, which a fixed pause did not always outlast on a loaded machine.
    """
    import airflow_client.client as ac

    parked = f"Received executor event with state success for task instance TaskInstanceKey(dag_id='{dag_id}', " \
             f"task_id='review', run_id='{run_id}'"
    deadline = time.monotonic() + 120
    while parked not in (server.home / "scheduler.log").read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the scheduler never saw review of {run_id} parked:\n{server.log_tail('scheduler')}")
        time.sleep(0.5)
    return ac.TaskInstanceApi(client).update_hitl_detail(
        dag_id, run_id, "review", -1,
        ac.UpdateHITLDetailPayload(chosen_options=[option], params_input={"comment": comment}),
    )


def dags_parsed(client):
    import airflow_client.client as ac

    dags = {d.dag_id: d for d in ac.DAGApi(client).get_dags().dags}
    if {"retrain_model", "monitor_drift"} <= set(dags) and not any(d.is_paused for d in dags.values()):
        return dags
    return None


def asset_triggered_run(runs):
    found = [r for r in runs.get_dag_runs("retrain_model").dag_runs if r.run_type.value == "asset_triggered"]
    return found[0].dag_run_id if found else None


def kill_task_when_logged(server: AirflowServer, client, dag_id: str, run_id: str, task_id: str, marker: str,
                          timeout_s: float = 240) -> int:
    """SIGKILL the process running a task once its log shows ``marker``; returns the killed pid.

    The task runner names its process ``airflow worker -- <task instance id>``; the supervisor above it
    survives, sees its child die and reports the try as failed, as after an OOM kill.
    """
    import signal

    import airflow_client.client as ac

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = list(server.home.glob(f"logs/dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt=1.log"))
        if logs and marker in logs[0].read_text(errors="replace"):
            break
        time.sleep(0.2)
    else:
        raise TimeoutError(f"{task_id} never logged {marker!r}\n{server.log_tail('scheduler')}")
    title = f"airflow worker -- {ac.TaskInstanceApi(client).get_task_instance(dag_id, run_id, task_id).id}"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().split(b"\0")[0].decode(errors="replace").strip() == title:
                pid = int(cmdline.parent.name)
                os.kill(pid, signal.SIGKILL)
                return pid
        except (OSError, ValueError):
            continue
    raise RuntimeError(f"no process titled {title!r}")
