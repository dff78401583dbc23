"""The cycle index: a copy of each cycle's MLflow summary that pages and filters, filled from MLflow once."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from pipeline import catalog, cycle_index, registry
from pipeline.config import load_config
from pipeline.cycle import run_cycle
from pipeline.cycle_index import CycleFilter
from pipeline.record import RunSummary
from pipeline.validate import propose_suite, write_suite
from tests.conftest import small_frame, write_config


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two retraining cycles: a first champion, then a rejected or promoted candidate."""
    root = tmp_path_factory.mktemp("cycle-index")
    frame = small_frame(3000, days=20)
    engine = sa.create_engine(f"sqlite:///{root / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    config = load_config(write_config(root, training={"family": "logistic_regression", "params": {}},
                                      promotion={"approval": "auto", "database_url": f"sqlite:///{root / 'pipeline.db'}"}),
                         environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    outcomes = [run_cycle(config, date(2026, 1, 10)), run_cycle(config, date(2026, 1, 20))]
    return config, outcomes


def mlflow_summaries(config) -> dict[str, RunSummary]:
    return {s.cycle_id: s for s in (RunSummary.of(run, "retrain") for run in registry.all_runs(config, "retrain"))}


def test_every_cycle_is_indexed_as_mlflow_records_it(recorded):
    config, outcomes = recorded

    listed = catalog.cycle_page(config)

    assert [c.cycle_id for c in listed.cycles] == [o.cycle.cycle_id for o in reversed(outcomes)]
    assert listed.total == 2 and listed.pages == 1
    # The copy is the summary MLflow gives now: refreshed at every log and status change, the last one included.
    assert {c.cycle_id: c for c in listed.cycles} == mlflow_summaries(config)
    assert listed.cycles[-1].status == "promoted"


def test_cycles_recorded_before_the_index_are_copied_in_from_mlflow_once(recorded):
    config, _ = recorded
    engine = sa.create_engine(config.promotion.database_url)
    with engine.begin() as conn:  # as a store from before the index: no rows, never filled
        conn.execute(cycle_index.cycles.delete())
        conn.execute(cycle_index.filled.delete())
    engine.dispose()

    assert {c.cycle_id: c for c in catalog.cycle_page(config).cycles} == mlflow_summaries(config)
    with sa.create_engine(config.promotion.database_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(cycle_index.filled)).scalar_one() == 1


@pytest.fixture(scope="module")
def many(recorded):
    """2,000 more cycles in the index, copies of a real one on 1,000 days, every other one a monitoring cycle."""
    config, outcomes = recorded
    template = catalog.cycle_page(config).cycles[0]
    statuses = ["no_drift", "drift_detected", "gate_rejected", "promoted", "validation_stopped"]
    copies = [replace(template, cycle_id=f"bulk-{i:04d}", kind="monitor" if i % 2 else "retrain",
                      as_of=date(2023, 1, 1) + timedelta(days=i // 2), status=statuses[i % 5],
                      drifted_features=["x_num"] if i % 10 == 0 else [])
              for i in range(2000)]
    engine = cycle_index._engine(config.promotion.database_url)
    with engine.begin() as conn:
        cycle_index._replace(conn, config, copies)
    yield config
    with engine.begin() as conn:
        conn.execute(cycle_index.cycles.delete().where(cycle_index.cycles.c.cycle_id.like("bulk-%")))


@pytest.mark.parametrize("where, total", [
    pytest.param(CycleFilter(), 2002, id="all"),
    pytest.param(CycleFilter(kind="monitor"), 1000, id="kind"),
    pytest.param(CycleFilter(status="drift_detected"), 400, id="status"),
    pytest.param(CycleFilter(since=date(2023, 1, 1), until=date(2023, 1, 10)), 20, id="as-of-range"),
    pytest.param(CycleFilter(search="X_NUM"), 200, id="search-a-drifted-feature"),
    pytest.param(CycleFilter(search="bulk-19"), 100, id="search-a-cycle-id"),
    pytest.param(CycleFilter(search="bulk_%"), 0, id="wildcards-match-themselves"),
])
def test_filters_count_every_match(many, where, total):
    assert catalog.cycle_page(many, where).total == total


def test_pages_of_2000_cycles_hold_each_cycle_once_newest_first(many):
    first = catalog.cycle_page(many, number=1, size=50)
    assert first.pages == 41 and len(first.cycles) == 50
    seen = []
    for number in range(1, first.pages + 1):
        seen += catalog.cycle_page(many, number=number, size=50).cycles
    assert len(seen) == 2002 and len({c.cycle_id for c in seen}) == 2002
    days = [c.as_of for c in seen]
    assert days == sorted(days, reverse=True)
    assert catalog.cycle_page(many, number=99, size=50).cycles == []  # past the last page: nothing, no error


def test_a_store_no_cycle_used_lists_nothing_and_creates_nothing(tmp_path):
    config = load_config(write_config(tmp_path), environ={})

    assert catalog.cycle_page(config).total == 0
    assert not (tmp_path / "pipeline.db").exists()
