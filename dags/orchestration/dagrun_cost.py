"""What Airflow adds to a cycle, on a real scheduler: ``PYTHONPATH=dags python -m orchestration.dagrun_cost`` (``make bench``).

A real Airflow (``orchestration.servers.AirflowServer``: api-server, scheduler and dag-processor,
LocalExecutor on SQLite) in a temporary home runs ``retrain_model`` on the demo: its warehouse
seeded and its config with every store in that home, triggered through Airflow's official REST
client as the trigger form does, one run per day of the README's walk-through (a first champion,
a rejection, a promotion after concept drift). Per run: the DAG run's wall time against the sum
of the stages' own durations (the cycle's record); per task: the wait from queued to running, its
duration, and the part of it beyond its stage's own seconds. ``--fork`` starts the tasks as a
plain fork of the executor's worker, without the libraries ``orchestration.preload`` imports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from orchestration.servers import ROOT, UNSCHEDULED, AirflowServer, dags_parsed, finished_state, wait_for

DEMO_CONFIG = ROOT / "pipeline" / "configs" / "demo.yaml"
WALK_THROUGH = ("2026-02-26", "2026-03-28", "2026-05-28")
# A task whose stage has another name in the cycle's record.
STAGE_OF_TASK = {"monitor_model": "quality"}
FORK = {"AIRFLOW__SCHEDULER__MP_START_METHOD": "fork", "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": ""}


def demo_config(home: Path) -> Path:
    """The demo's config on a freshly seeded warehouse, every store (registry, runs, promotion log) under ``home``."""
    from pipeline import demo, registry
    from pipeline.config import load_config

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["source"]["url"] = f"sqlite:///{home / 'warehouse.db'}"
    raw["validation"]["suite"] = str(DEMO_CONFIG.parent / raw["validation"]["suite"])
    raw["registry"] = {**raw["registry"], "tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
                       "artifact_root": str(home / "artifacts")}
    raw["promotion"] = {**raw["promotion"], "database_url": f"sqlite:///{home / 'pipeline.db'}"}
    raw["storage"] = {"root": str(home / "runs")}
    raw["orchestration"] = {**raw["orchestration"], **UNSCHEDULED}
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    demo.seed_demo(raw["source"]["url"])
    registry.ensure_experiment_id(load_config(path, environ={}))  # MLflow's store migrated before any run
    return path


def _run(server: AirflowServer, client, config, as_of: str) -> dict[str, Any]:
    import airflow_client.client as ac

    from pipeline.record import STATUS, CycleRecord

    runs = ac.DagRunApi(client)
    run_id = runs.trigger_dag_run("retrain_model", ac.TriggerDAGRunPostBody(
        logical_date=None, conf={"as_of": as_of, "auto_approve": True})).dag_run_id
    wait_for(f"retrain_model {run_id}", lambda: finished_state(runs, "retrain_model", run_id), server,
             timeout_s=900, every_s=0.5)
    run = runs.get_dag_run("retrain_model", run_id)
    handle = ac.XComApi(client).get_xcom_entry("retrain_model", "load", run_id, "return_value", deserialize=True)
    record = CycleRecord.find(config, handle.actual_instance.value["cycle_id"]).require(STATUS)
    stages = {name: timing.seconds for name, timing in record.stages.items()}
    ran = [ti for ti in ac.TaskInstanceApi(client).get_task_instances("retrain_model", run_id).task_instances
           if ti.state and ti.state.value == "success" and ti.start_date and ti.end_date]
    tasks = [{"task": ti.task_id, "duration_s": (ti.end_date - ti.start_date).total_seconds(),
              "queued_s": (ti.start_date - ti.queued_when).total_seconds() if ti.queued_when else 0.0,
              "stage_s": stages.get(STAGE_OF_TASK.get(ti.task_id, ti.task_id))}
             for ti in sorted(ran, key=lambda ti: ti.start_date)]
    return {"as_of": as_of, "status": record.status.value, "wall_s": (run.end_date - run.start_date).total_seconds(),
            "stage_sum_s": sum(stages.values()), "tasks": tasks}


def measure(home: Path, days: tuple[str, ...] = WALK_THROUGH, fork: bool = False) -> dict[str, Any]:
    from pipeline.config import load_config

    config_path = demo_config(home / "stores")
    config = load_config(config_path, environ={})
    with AirflowServer(home / "airflow", config_path, env=FORK if fork else None) as server:
        client = server.client("admin")
        wait_for("the DAGs parsed and unpaused", lambda: dags_parsed(client), server)
        runs = [_run(server, client, config, day) for day in days]
    return {"start": "fork" if fork else "forkserver with preload", "runs": runs}


def print_table(measured: list[dict[str, Any]]) -> None:
    """One column per way of starting tasks: per run its wall time, its stages' sum and their ratio; then per task
    the mean of its duration and of what it took beyond its stage, and the rest of the wall time (the scheduler's)."""
    print("Airflow DAG runs of retrain_model on the demo (real scheduler, LocalExecutor on SQLite, auto-approved)")
    print(f"{'':<26}" + "".join(f"{m['start']:>36}" for m in measured))
    print(f"{'as of':<12}{'status':<14}" + "".join(f"{'wall':>14}{'stages':>11}{'ratio':>11}" for _ in measured))
    print("-" * (26 + 36 * len(measured)))
    for i, first in enumerate(measured[0]["runs"]):
        cells = "".join(f"{m['runs'][i]['wall_s']:>13.1f}s{m['runs'][i]['stage_sum_s']:>10.1f}s"
                        f"{m['runs'][i]['wall_s'] / m['runs'][i]['stage_sum_s']:>10.2f}x" for m in measured)
        print(f"{first['as_of']:<12}{first['status']:<14}{cells}")
    print(f"{'task (mean of runs)':<26}" + "".join(f"{'duration':>14}{'beyond its stage':>22}" for _ in measured))
    for task in dict.fromkeys(t["task"] for r in measured[0]["runs"] for t in r["tasks"]):
        cells = []
        for m in measured:
            ran = [t for r in m["runs"] for t in r["tasks"] if t["task"] == task]
            beyond = [t["duration_s"] - (t["stage_s"] or 0.0) for t in ran]
            cells.append(f"{statistics.mean(t['duration_s'] for t in ran):>13.1f}s{statistics.mean(beyond):>21.1f}s"
                         if ran else f"{'-':>36}")
        print(f"{task:<26}" + "".join(cells))
    between = [statistics.mean(r["wall_s"] - sum(t["duration_s"] for t in r["tasks"]) for r in m["runs"]) for m in measured]
    print(f"{'between tasks':<26}" + "".join(f"{b:>13.1f}s{'':>22}" for b in between).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", nargs="+", choices=["preload", "fork"], default=["preload", "fork"],
                        help="how the executor starts tasks; one Airflow for each (default: both)")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)
    measured = []
    for start in args.start:
        with tempfile.TemporaryDirectory(prefix="dagrun-cost-") as tmp:
            measured.append(measure(Path(tmp), fork=start == "fork"))
    print_table(measured)
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
