"""Promotion, rejection and rollback against a real MLflow registry and the promotion log."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from pipeline import promote, registry
from pipeline.config import load_config
from pipeline.errors import ArtifactMismatch, PromotionRefused
from pipeline.train import build_model, encode_target
from tests.conftest import small_frame, write_config


@pytest.fixture
def config(tmp_path):
    return load_config(write_config(tmp_path, training={"family": "logistic_regression", "params": {}}), environ={})


def add_version(config, cycle_id: str, gate_passed: bool = True, compared_with: str = "none") -> str:
    """Register a small real model the way the register stage does, with the gate's tags."""
    frame = small_frame(200)
    model = build_model(config, "cpu").fit(frame, encode_target(config, frame["label"]))
    run_id = registry.cycle_run_id(config, cycle_id, "retrain", {"as_of": "2026-01-10"}, cycle_id)
    tags = {"cycle_id": cycle_id, "gate.passed": "true" if gate_passed else "false", "gate.verdict_id": cycle_id,
            "gate.champion_version": compared_with, "window.start": "2026-01-01", "window.end": "2026-01-05"}
    return registry.register_candidate(config, run_id, model, frame[config.source.features.all].head(3), tags).version


def test_promote_moves_aliases_and_logs_the_actor(config):
    v1 = add_version(config, "c1")
    promote.promote(config, v1, actor="alice")
    v2 = add_version(config, "c2", compared_with=v1)
    assert registry.aliases(config) == {"champion": v1, "challenger": v2}
    entry = promote.promote(config, v2, actor="bob", reason="looks good")
    assert registry.aliases(config) == {"champion": v2, "previous-champion": v1}
    assert (entry.actor, entry.action, entry.from_version, entry.to_version, entry.verdict_id) == ("bob", "promote", v1, v2, "c2")
    assert [e.describe().split(" ", 3)[-1] for e in promote.history(config)] == [
        f"bob: promoted v{v2} (was v{v1}) (looks good)", f"alice: promoted v{v1} (first champion)",
    ]
    assert registry.get_version(config, v2).tags["approved_by"] == "bob"


def test_promoting_the_same_approval_twice_adds_no_row(config):
    v1 = add_version(config, "c1")
    first = promote.promote(config, v1, actor="alice")
    assert promote.promote(config, v1, actor="alice") == first
    assert len(promote.history(config)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({}, r"no passing gate verdict \(gate.passed=false\)", id="no-passing-verdict"),
        pytest.param({"override": True}, r"--override needs --reason", id="override-without-reason"),
    ],
)
def test_ungated_versions_are_refused(config, kwargs, message):
    version = add_version(config, "c1", gate_passed=False)
    with pytest.raises(PromotionRefused, match=message):
        promote.promote(config, version, actor="alice", **kwargs)
    assert registry.alias_version(config, "champion") is None and promote.history(config) == []


def test_override_with_reason_is_recorded(config):
    version = add_version(config, "c1", gate_passed=False)
    entry = promote.promote(config, version, actor="alice", override=True, reason="incident 42 hotfix")
    assert (entry.action, entry.reason) == ("override", "incident 42 hotfix")
    assert registry.aliases(config)["champion"] == version


def test_refused_when_champion_moved_since_the_gate(config):
    v1 = add_version(config, "c1")
    v2 = add_version(config, "c2")  # gated against "no champion"
    promote.promote(config, v1, actor="alice")
    with pytest.raises(PromotionRefused, match=r"compared version 2 against champion none, but the champion is now 1"):
        promote.promote(config, v2, actor="bob")
    assert registry.aliases(config)["champion"] == v1


def test_a_champion_alias_moved_outside_the_pipeline_is_reported_and_blocks_promotion(config):
    from pipeline.summary import format_status

    v1 = add_version(config, "c1")
    promote.promote(config, v1, actor="alice")
    impostor = add_version(config, "c2", compared_with=v1)
    assert promote.champion_mismatch(config) is None
    registry.set_alias(config, registry.CHAMPION, impostor)  # by hand, as anyone who reaches MLflow could

    mismatch = promote.champion_mismatch(config)
    assert mismatch is not None and f"alias of 'test_model' is v{impostor}" in mismatch and f"move is v{v1}" in mismatch
    assert f"WARNING: {mismatch}" in format_status(config)
    candidate = add_version(config, "c3", compared_with=impostor)
    with pytest.raises(PromotionRefused, match=rf"the promotion log says v{v1}, this promote expected v{impostor}"):
        promote.promote(config, candidate, actor="bob")
    with pytest.raises(PromotionRefused, match=rf"the promotion log says v{v1}, this rollback expected v{impostor}"):
        promote.rollback(config, actor="bob", to_version=v1)
    assert len(promote.history(config)) == 1

    promote.promote(config, v1, actor="carol", reason="restore the logged champion", override=True)
    assert promote.champion_mismatch(config) is None and registry.aliases(config)["champion"] == v1


def test_reject_keeps_the_champion(config):
    v1 = add_version(config, "c1")
    promote.promote(config, v1, actor="alice")
    v2 = add_version(config, "c2", compared_with=v1)
    entry = promote.reject(config, v2, actor="carol", reason="suspicious spike")
    assert (entry.action, entry.to_version, entry.reason) == ("reject", v2, "suspicious spike")
    assert registry.aliases(config) == {"champion": v1}
    with pytest.raises(PromotionRefused, match="was rejected"):
        promote.promote(config, v2, actor="bob")


def test_a_reject_that_a_promotion_overtook_is_refused(config, monkeypatch):
    """The reject read MLflow before the promotion moved the alias, and writes the log after it committed."""
    v1 = add_version(config, "c1")
    stale = registry.get_version(config, v1)  # what the reject saw: not the champion yet
    promote.promote(config, v1, actor="alice")
    monkeypatch.setattr(registry, "get_version", lambda *_: stale)
    with pytest.raises(PromotionRefused, match="became the champion meanwhile"):
        promote.reject(config, v1, actor="carol", reason="too late")
    monkeypatch.undo()
    assert registry.aliases(config) == {"champion": v1}
    assert [e.action for e in promote.history(config)] == ["promote"]
    assert registry.get_version(config, v1).tags["approval"] == "approved"


def test_rejecting_the_same_version_again_adds_no_row(config):
    v1 = add_version(config, "c1")
    first = promote.reject(config, v1, actor="carol", reason="too early")
    again = promote.reject(config, v1, actor="carol", reason="too early")  # a re-run task
    assert again == first and len(promote.history(config)) == 1


def test_rollback_walks_back_through_the_history(config):
    v1 = add_version(config, "c1")
    promote.promote(config, v1, actor="a")
    v2 = add_version(config, "c2", compared_with=v1)
    promote.promote(config, v2, actor="a")
    v3 = add_version(config, "c3", compared_with=v2)
    promote.promote(config, v3, actor="a")
    entry = promote.rollback(config, actor="ops", reason="bad predictions")
    assert (entry.action, entry.from_version, entry.to_version) == ("rollback", v3, v2)
    assert registry.aliases(config) == {"champion": v2, "previous-champion": v1}
    promote.rollback(config, actor="ops", reason="still bad")
    assert registry.aliases(config) == {"champion": v1}
    with pytest.raises(PromotionRefused, match="no previous champion"):
        promote.rollback(config, actor="ops")


def test_a_challenger_whose_files_changed_since_registration_is_not_promoted(config):
    from urllib.parse import unquote, urlparse

    version = add_version(config, "c1")
    location = registry.client(config).get_logged_model(registry.get_version(config, version).model_id).artifact_location
    (Path(unquote(urlparse(location).path)) / "model.skops").write_bytes(b"PK\x03\x04 another model")
    with pytest.raises(ArtifactMismatch, match=rf"version {version} of 'test_model'.*model\.skops changed"):
        promote.promote(config, version, actor="alice")
    assert registry.aliases(config) == {"challenger": version} and promote.history(config) == []


def test_a_log_created_before_the_artifact_columns_gains_them_and_keeps_its_rows(config):
    import sqlalchemy as sa

    engine = sa.create_engine(config.promotion.database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE promotion_log (id INTEGER PRIMARY KEY, model_name VARCHAR(200) NOT NULL, seq INTEGER NOT NULL,"
            " at DATETIME NOT NULL, actor VARCHAR(200) NOT NULL, action VARCHAR(20) NOT NULL, from_version VARCHAR(20),"
            " to_version VARCHAR(20), verdict_id VARCHAR(200), reason TEXT)"
        )
        conn.exec_driver_sql("INSERT INTO promotion_log (model_name, seq, at, actor, action, to_version) VALUES "
                             "('test_model', 1, '2026-01-01 00:00:00', 'alice', 'promote', '7')")
    engine.dispose()
    v1 = add_version(config, "c1")
    with pytest.raises(PromotionRefused, match="the promotion log says v7"):
        promote.promote(config, v1, actor="bob")
    entry = promote.promote(config, v1, actor="bob", override=True, reason="v7 is gone")
    assert [(e.seq, e.actor) for e in promote.history(config)] == [(entry.seq, "bob"), (1, "alice")]


def _promote_in_child(config_path: str, version: str, results) -> None:
    config = load_config(config_path, environ={})
    try:
        promote.promote(config, version, actor=f"process-{version}")
        results.put((version, "won"))
    except PromotionRefused as exc:
        results.put((version, str(exc)))


def test_two_processes_promoting_at_once_exactly_one_wins(tmp_path, config):
    v1, v2 = add_version(config, "c1"), add_version(config, "c2")  # both gated against "no champion"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [
        context.Process(target=_promote_in_child, args=(str(tmp_path / "config.yaml"), v, results)) for v in (v1, v2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    outcomes = dict(results.get(timeout=5) for _ in children)
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    loser = next(v for v in outcomes if v not in winners)
    assert "champion" in outcomes[loser] and ("changed meanwhile" in outcomes[loser] or "is now" in outcomes[loser])
    assert registry.aliases(config)["champion"] == winners[0]
    assert [e.to_version for e in promote.history(config)] == winners


def test_the_registered_model_serves_probabilities_through_pyfunc(config):
    import mlflow

    version = add_version(config, "c1")
    model = mlflow.pyfunc.load_model(f"models:/{config.model_name}/{version}")
    frame = small_frame(20)
    scores = model.predict(frame[config.source.features.all].astype({"x_num": "float64", "y_num": "float64"}))
    assert scores.shape == (20, 2) and ((scores >= 0) & (scores <= 1)).all()
