"""The review pages' look (plugins/review_ui.py) and wording (plugins/pipeline_review.py), without a server."""

from __future__ import annotations

import re
import sys

import pytest

from pipeline.record import VersionTags
from tests.dags.harness import ROOT

sys.path.insert(0, str(ROOT / "plugins"))
import pipeline_review  # noqa: E402  (the plugins folder is on Airflow's path, not on the tests')
import review_ui as ui  # noqa: E402


@pytest.mark.parametrize("value, shown", [
    pytest.param(0.804674, "0.8047", id="score-to-4-decimals"),
    pytest.param(48.4213, "48.42", id="loss-to-4-digits"),
    pytest.param(6.50424e-07, "0.0000", id="tiny"),
    pytest.param(123456.7, "123,457", id="large"),
    pytest.param(None, "—", id="missing"),
    pytest.param(float("nan"), "—", id="nan"),
])
def test_metrics_are_rounded_to_what_tells_models_apart(value, shown):
    assert ui.metric(value) == shown


@pytest.mark.parametrize("value, shown", [
    pytest.param(0.00025, "< 0.001", id="below-a-thousandth"), pytest.param(0.0312, "0.031", id="three-decimals"),
])
def test_p_values_are_shown_at_three_decimals(value, shown):
    assert ui.p_value(value) == shown


def test_ticks_are_round_and_cover_the_range():
    ticks = ui.nice_ticks(0.7912, 0.8123)
    assert ticks[0] <= 0.7912 and ticks[-1] >= 0.8123
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (0.002, 0.005, 0.01)


def test_a_line_chart_titles_its_axes_draws_the_threshold_and_keeps_same_day_cycles_apart():
    labels = ["2026-05-28 monitor", "2026-05-28 retrain", "2026-06-29 retrain"]
    svg = ui.line_chart(labels, [ui.Series("x_num", [0.02, 0.31, None])], "Wasserstein distance", "cycle (as of, kind)",
                        threshold=0.1)

    assert "Wasserstein distance</text>" in svg and "cycle (as of, kind)</text>" in svg
    assert svg.count('class="threshold"') == 1
    circles = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert len(circles) == 2 and circles[0] < circles[1]  # two cycles of one day: two x positions
    assert "2026-05-28 monitor</text>" in svg and "2026-05-28 retrain</text>" in svg
    # The y axis fits the data, it does not start at zero for scores near 0.8.
    tight = ui.line_chart(["a", "b"], [ui.Series("auc", [0.80, 0.81])], "roc_auc", "fold")
    assert ">0.00</text>" not in tight and ">0</text>" not in tight


def test_a_series_of_unrelated_points_is_drawn_without_a_line():
    joined = ui.line_chart(["#0", "#1"], [ui.Series("best so far", [0.80, 0.81])], "roc_auc", "trial")
    apart = ui.line_chart(["#0", "#1"], [ui.Series("pruned", [0.80, 0.81], joined=False)], "roc_auc", "trial")
    assert joined.count("<polyline") == 1 and apart.count("<polyline") == 0
    assert apart.count("<circle") == 2


def test_the_heat_map_rings_drifted_cells_and_leaves_unmeasured_ones_empty():
    cells = {("x", "c1"): ui.HeatCell(0.5, False, "x c1"), ("x", "c2"): ui.HeatCell(2.0, True, "x c2 drifted")}
    svg = ui.heat_map(["x", "y"], ["c1", "c2"], cells, {"x": "#feature-0"})

    assert svg.count('stroke="#7a1f1f"') == 1 and "<title>x c2 drifted</title>" in svg
    assert "y · c1: not measured" in svg and '<a href="#feature-0">x</a>' in svg


def test_statuses_read_as_a_reviewer_says_them():
    assert ">stopped by validation<" in ui.status_badge("validation_stopped")
    assert ">pending approval<" in ui.status_badge("awaiting_approval")
    assert ">superseded<" in ui.status_badge("superseded")


@pytest.mark.parametrize("aliases, approval, status, state", [
    pytest.param(["champion"], "approved", "promoted", "champion", id="champion"),
    pytest.param(["challenger"], None, "awaiting_approval", "pending approval", id="challenger"),
    pytest.param([], "rejected", "rejected", "rejected", id="rejected"),
    pytest.param([], None, "superseded", "superseded", id="superseded"),
    pytest.param([], "approved", "promoted", "former champion", id="retired"),
])
def test_every_version_has_a_state(aliases, approval, status, state):
    cycle = type("Cycle", (), {"status": status})()
    assert f">{state}<" in pipeline_review.version_state(aliases, VersionTags(approval=approval), cycle)
