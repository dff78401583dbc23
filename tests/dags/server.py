"""What the tests do on a real Airflow (``orchestration.servers.AirflowServer``): look at failed tasks, answer an
approval, find an asset-triggered run, kill a task's process mid-stage."""

from __future__ import annotations

import os
import time
from pathlib import Path

from orchestration.servers import AirflowServer


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
