"""A hostile artifact store: a registered model's files are checked against the registry's manifest before any load."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import skops.io
import sqlalchemy as sa

from pipeline import artifacts, promote, registry
from pipeline.config import load_config
from pipeline.cycle import run_cycle
from pipeline.errors import ArtifactMismatch, ModelArtifactError, RegistryUnreachable
from pipeline.families import FAMILIES
from pipeline.record import Status
from pipeline.summary import format_outcome
from pipeline.train import FeatureCoercer, encode_target, fit_model
from tests.conftest import label_flip_store, small_frame, write_config

CHAMPION_AS_OF = date(2026, 1, 10)
CHALLENGER_AS_OF = date(2026, 1, 20)  # beats the 01-10 champion: the labels flip on 01-11


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A store whose champion v1 was promoted by a cycle; tests that tamper with it put its files back."""
    config = label_flip_store(tmp_path_factory.mktemp("artifacts"), promotion={"approval": "auto"})
    outcome = run_cycle(config, CHAMPION_AS_OF)
    assert outcome.status == Status.PROMOTED, format_outcome(outcome)
    return config


def model_directory(config, version: str) -> Path:
    """Where the artifact store keeps the version's files (a local folder in these tests)."""
    model_id = registry.get_version(config, version).model_id
    location = registry.client(config).get_logged_model(model_id).artifact_location
    return Path(unquote(urlparse(location).path))


@pytest.fixture
def champion_files(champion, tmp_path):
    """The champion's folder in the artifact store, restored after the test whatever it did to it."""
    directory = model_directory(champion, "1")
    shutil.copytree(directory, tmp_path / "kept")
    yield directory
    shutil.rmtree(directory)
    shutil.copytree(tmp_path / "kept", directory)


def another_valid_model(config) -> bytes:
    frame = small_frame(300, seed=7)
    frame["label"] = 1 - frame["label"]
    model, _ = fit_model(config, frame, encode_target(config, frame["label"]), "cpu")
    return skops.io.dumps(model)


def swap_model(directory: Path, config) -> None:
    (directory / "model.skops").write_bytes(another_valid_model(config))


def truncate_model(directory: Path, config) -> None:
    path = directory / "model.skops"
    path.write_bytes(path.read_bytes()[:100])


def add_file(directory: Path, config) -> None:
    (directory / "code" / "pipeline" / "sitecustomize.py").write_text("import os\n")


def delete_file(directory: Path, config) -> None:
    (directory / "MLmodel").unlink()


def edit_shipped_code(directory: Path, config) -> None:
    with (directory / "code" / "pipeline" / "train.py").open("a") as shipped:
        shipped.write("\nprint('hello from the artifact store')\n")


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        pytest.param(swap_model, r"model\.skops changed", id="model-swapped-for-another-valid-one"),
        pytest.param(truncate_model, r"model\.skops changed \(sha256 \w+…, 100 bytes", id="model-truncated"),
        pytest.param(add_file, r"code/pipeline/sitecustomize\.py was added", id="file-added"),
        pytest.param(delete_file, r"MLmodel is missing", id="file-deleted"),
        pytest.param(edit_shipped_code, r"code/pipeline/train\.py changed", id="shipped-code-edited"),
    ],
)
def test_a_tampered_champion_stops_the_cycle_before_it_is_scored(champion, champion_files, tamper, named, request):
    tamper(champion_files, champion)
    cycle_id = f"test_model-tampered-{request.node.callspec.id}"
    with pytest.raises(ArtifactMismatch, match=rf"version 1 of 'test_model'.*{named}"):
        run_cycle(champion, CHALLENGER_AS_OF, cycle_id=cycle_id)
    assert registry.aliases(champion) == {"champion": "1"}
    assert [v.version for v in registry.list_versions(champion)] == ["1"]
    assert [e.action for e in promote.history(champion)] == ["promote"]
    run = registry.find_runs(champion, "retrain", f"tags.cycle_id = '{cycle_id}'")[0]
    assert run.data.tags["cycle.status"] == "failed"


def recorded_rows(config) -> list[tuple[str, str, str | None, str | None]]:
    """(action, version, manifest digest, manifest) of each promotion log row, oldest first."""
    log = promote.promotion_log
    engine = sa.create_engine(config.promotion.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(log.c.action, log.c.to_version, log.c.artifact_sha256, log.c.artifact_manifest).order_by(log.c.seq)
        ).all()
    engine.dispose()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def test_a_sound_store_still_promotes_and_rolls_back_refusing_a_tampered_target(champion, tmp_path):
    outcome = run_cycle(champion, CHALLENGER_AS_OF, cycle_id="test_model-sound-store")
    assert outcome.status == Status.PROMOTED, format_outcome(outcome)
    new = outcome.version.version
    directory = model_directory(champion, "1")
    shutil.copytree(directory, tmp_path / "kept")
    swap_model(directory, champion)
    with pytest.raises(ArtifactMismatch, match=r"version 1 of 'test_model'.*model\.skops changed"):
        promote.rollback(champion, actor="ops", reason="bad predictions")
    assert registry.aliases(champion) == {"champion": new, "previous-champion": "1"}

    shutil.rmtree(directory)
    shutil.copytree(tmp_path / "kept", directory)
    promote.rollback(champion, actor="ops", reason="bad predictions")
    assert registry.aliases(champion) == {"champion": "1"}
    tags = {v.version: v.tags for v in registry.list_versions(champion)}
    assert [(action, version) for action, version, *_ in recorded_rows(champion)] == [
        ("promote", "1"), ("promote", new), ("rollback", "1")]
    for _, version, digest, manifest in recorded_rows(champion):
        assert digest == tags[version][artifacts.MANIFEST_DIGEST_TAG]
        assert manifest == tags[version][artifacts.MANIFEST_TAG]
        assert "model.skops" in artifacts.Manifest.from_json(manifest).files


def test_mlflows_own_load_on_a_local_store_leaves_the_version_loadable(champion, champion_files):
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"models:/{champion.model_name}/1")
    assert (champion_files / artifacts.MLFLOW_LOAD_MARKER).is_file()  # MLflow wrote into the store itself
    frame = small_frame(20)[champion.source.features.all]
    assert (registry.load_model(champion, "1").predict_proba(frame) == served.predict(frame)).all()


def test_the_marker_mlflow_writes_is_allowed_at_the_top_only(champion, champion_files):
    (champion_files / "code" / artifacts.MLFLOW_LOAD_MARKER).write_text("name: test_model\n")
    with pytest.raises(ArtifactMismatch, match=r"code/registered_model_meta was added"):
        registry.load_model(champion, "1")


def test_a_verified_model_loads_with_the_installed_package_and_the_projects_trusted_types(champion, champion_files):
    # The artifact's MLmodel would tell MLflow's loader to trust nothing: the pipeline does not read it.
    mlmodel = champion_files / "MLmodel"
    assert "skops_trusted_types" in mlmodel.read_text()
    before = list(sys.path)
    model = registry.load_model(champion, "1")
    assert sys.path == before  # the shipped code/ folder was not put on it
    assert type(model[0]) is FeatureCoercer  # the installed class, not one imported from the artifact
    scores = model.predict_proba(small_frame(20)[champion.source.features.all])
    assert scores.shape == (20, 2)


@pytest.mark.parametrize(
    ("family", "task"),
    [pytest.param(name, task, id=f"{name}-{task}") for name, family in FAMILIES.items() for task in family.tasks],
)
def test_every_family_builds_only_types_the_pipeline_trusts(tmp_path, family, task):
    config = load_config(write_config(tmp_path, task=task, training={"family": family, "params": {}}), environ={})
    frame = small_frame(200)
    model, _ = fit_model(config, frame, encode_target(config, frame["label"]), "cpu")
    assert set(artifacts.untrusted_types(model)) <= set(artifacts.TRUSTED_TYPES)
    skops.io.dump(model, tmp_path / "model.skops")
    loaded = skops.io.load(tmp_path / "model.skops", trusted=list(artifacts.TRUSTED_TYPES))
    assert type(loaded[-1]) is type(model[-1])


class ForeignStep(FeatureCoercer):
    """A step of a type no family produces."""


def test_a_model_with_a_type_outside_the_allow_list_is_not_registered(config):
    frame = small_frame(100)
    model, _ = fit_model(config, frame, encode_target(config, frame["label"]), "cpu")
    model.steps[0] = ("coerce", ForeignStep(list(config.source.features.numeric),
                                           list(config.source.features.categorical)))
    run_id = registry.cycle_run_id(config, "c1", "retrain", {"as_of": "2026-01-05"}, "c1")
    with pytest.raises(ModelArtifactError, match=r"outside the pipeline's allow-list \(\S*test_artifacts\.ForeignStep\)"):
        registry.register_candidate(config, run_id, model, frame[config.source.features.all].head(3), {})
    assert registry.list_versions(config) == []


def test_a_version_without_a_recorded_manifest_is_refused(champion, champion_files):
    mlflow_client = registry.client(champion)
    tags = registry.get_version(champion, "1").tags
    mlflow_client.delete_model_version_tag(champion.model_name, "1", artifacts.MANIFEST_TAG)
    try:
        with pytest.raises(ModelArtifactError, match=r"version 1 of 'test_model' has no recorded artifact manifest"):
            registry.load_model(champion, "1")
    finally:
        mlflow_client.set_model_version_tag(champion.model_name, "1", artifacts.MANIFEST_TAG,
                                            tags[artifacts.MANIFEST_TAG])


def test_a_model_file_that_cannot_be_read_names_the_version_the_file_and_the_failure(tmp_path):
    (tmp_path / "model.skops").write_bytes(b"not a zip archive")
    with pytest.raises(ModelArtifactError, match=r"version 3 of 'm': model\.skops cannot be loaded \(BadZipFile: "):
        artifacts.load_model_file(tmp_path, "m", "3")


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_is_named_quickly_and_nothing_is_written(tmp_path):
    uri = f"http://pipeline:s3cret@127.0.0.1:{closed_loopback_port()}"
    config = load_config(write_config(tmp_path), environ={"PIPELINE_TRACKING_URI": uri})
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as raised:
        run_cycle(config, date(2026, 1, 10))
    assert time.monotonic() - started < 30
    message = str(raised.value)
    assert uri.replace("s3cret", "***") in message and "s3cret" not in message and "Connection refused" in message
    assert raised.value.__suppress_context__  # MLflow's own message, which quotes the password, is not chained
    assert not (tmp_path / "runs").exists()
