"""The benchmark's DAG runs on a real scheduler: what it reports is what the run and the cycle's record hold."""

from __future__ import annotations

import pytest

from orchestration import dagrun_cost

pytestmark = pytest.mark.timeout(600)

FIRST_CHAMPION = ("load", "validate", "drift", "monitor_model", "train", "gate", "register", "route_approval", "promote")


def test_a_measured_run_is_the_walk_throughs_first_champion_with_every_stage_inside_its_task(tmp_path, capsys):
    measured = dagrun_cost.measure(tmp_path, days=dagrun_cost.WALK_THROUGH[:1])

    (run,) = measured["runs"]
    assert measured["start"] == "forkserver with preload"
    assert (run["as_of"], run["status"]) == ("2026-02-26", "promoted")
    assert [task["task"] for task in run["tasks"]] == list(FIRST_CHAMPION)
    staged = [task for task in run["tasks"] if task["stage_s"] is not None]
    assert {task["task"] for task in staged} == set(FIRST_CHAMPION) - {"route_approval"}
    assert all(0 < task["stage_s"] <= task["duration_s"] for task in staged)
    assert sum(task["stage_s"] for task in staged) == pytest.approx(run["stage_sum_s"])
    assert run["wall_s"] >= sum(task["duration_s"] for task in run["tasks"])

    dagrun_cost.print_table([measured])
    printed = capsys.readouterr().out
    assert f"2026-02-26  promoted      {run['wall_s']:>13.1f}s" in printed
    assert "between tasks" in printed and "monitor_model" in printed
