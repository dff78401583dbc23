"""Local servers for the tests and the benchmark: a free loopback port, waiting until a server answers, stopping a
process group; and a real Airflow (api-server, scheduler, dag-processor) on 127.0.0.1 in a home of its own.

By default LocalExecutor on SQLite, its task processes forked from a forkserver that has imported the
pipeline's libraries (``orchestration.preload``); ``env`` overrides any setting (e.g. a PostgreSQL
metadata DB and CeleryExecutor) and ``celery_worker=True`` also starts an ``airflow celery worker``
with the same env.
"""

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
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path

from orchestration.preload import forkserver_settings

DAGS = Path(__file__).resolve().parents[1]
ROOT = DAGS.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, processes: dict[str, subprocess.Popen], log_tail: Callable[[str], str],
                       timeout_s: float = 120) -> None:
    """Until ``url`` answers 200; at once, with its log, when one of the named ``processes`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s:\n" + "\n".join(map(log_tail, processes)))


def stop_group(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the process group ``process`` leads (started with start_new_session), SIGKILL what outlives it.

    The group, not the leader: servers fork workers, task supervisors and job runners that outlive it.
    """
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_alive(process.pid):
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


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
            **forkserver_settings(),
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


def dags_parsed(client):
    import airflow_client.client as ac

    dags = {d.dag_id: d for d in ac.DAGApi(client).get_dags().dags}
    if {"retrain_model", "monitor_drift"} <= set(dags) and not any(d.is_paused for d in dags.values()):
        return dags
    return None
