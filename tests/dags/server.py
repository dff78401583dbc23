"""A real Airflow on 127.0.0.1 for the tests: api-server, scheduler and dag-processor in their own home, stopped afterwards."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.dags.harness import DAGS, ROOT

AIRFLOW = str(Path(sys.executable).parent / "airflow")
COMPONENTS = ("api-server", "scheduler", "dag-processor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowServer:
    """Starts the components with LocalExecutor on SQLite (parallelism 4) and stops every process it started."""

    def __init__(self, home: Path, pipeline_config: Path, users: str = "admin:admin,alice:admin"):
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
        }
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> AirflowServer:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, check=True, capture_output=True)
        try:
            for component in COMPONENTS:
                log = open(self.home / f"{component}.log", "wb")
                self.processes.append(subprocess.Popen(
                    [AIRFLOW, component], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process, component in zip(self.processes, COMPONENTS):
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {component} exited: {self.log_tail(component)}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"the api-server did not answer within {timeout_s}s: {self.log_tail('api-server')}")

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


def task_state(client, dag_id: str, run_id: str, task_id: str) -> str | None:
    import airflow_client.client as ac

    state = ac.TaskInstanceApi(client).get_task_instance(dag_id, run_id, task_id).state
    return state.value if state else None


def dags_parsed(client):
    import airflow_client.client as ac

    dags = {d.dag_id: d for d in ac.DAGApi(client).get_dags().dags}
    if {"retrain_model", "monitor_drift"} <= set(dags) and not any(d.is_paused for d in dags.values()):
        return dags
    return None


def asset_triggered_run(runs):
    found = [r for r in runs.get_dag_runs("retrain_model").dag_runs if r.run_type.value == "asset_triggered"]
    return found[0].dag_run_id if found else None
