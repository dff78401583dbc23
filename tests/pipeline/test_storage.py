"""Run directories on a local folder and on fsspec stores (memory:// in process, file:// across processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from pipeline.errors import DataSourceError
from pipeline.storage import RunStorage, join


def test_a_local_root_is_the_run_directory_itself(tmp_path):
    storage = RunStorage(str(tmp_path / "runs"), "model", "cycle-1")
    storage.pull()
    assert storage.local_dir == tmp_path / "runs" / "model" / "cycle-1" and storage.local_dir.is_dir()
    (storage.local_dir / "gate.json").write_text("{}")
    storage.push()  # nothing to upload
    assert storage.url_of("gate.json") == str(tmp_path / "runs" / "model" / "cycle-1" / "gate.json")


def test_a_store_url_is_mirrored_through_a_work_folder(tmp_path, monkeypatch):
    root = f"memory://bucket-{uuid.uuid4().hex}/runs"
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "worker-a"))
    writer = RunStorage(root, "model", "cycle-1")
    writer.pull()
    (writer.local_dir / "reports").mkdir()
    (writer.local_dir / "reports" / "drift.html").write_text("<html>drift</html>")
    (writer.local_dir / "gate.json").write_text('{"passed": true}')
    writer.push()
    assert writer.url_of("gate.json") == f"{root}/model/cycle-1/gate.json"

    # Another task, on another worker: it finds what the first one stored.
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "worker-b"))
    reader = RunStorage(root, "model", "cycle-1")
    reader.pull()
    assert reader.local_dir.is_relative_to(tmp_path / "worker-b")
    assert (reader.local_dir / "reports" / "drift.html").read_text() == "<html>drift</html>"
    assert (reader.local_dir / "gate.json").read_text() == '{"passed": true}'


def test_push_uploads_only_what_changed(tmp_path, monkeypatch):
    import fsspec

    root = f"memory://bucket-{uuid.uuid4().hex}/runs"
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path))
    storage = RunStorage(root, "model", "cycle-1")
    storage.pull()
    (storage.local_dir / "a.json").write_text("1")
    storage.push()
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/model/cycle-1/a.json", b"changed in the store")
    (storage.local_dir / "b.json").write_text("2")
    storage.push()
    assert fs.cat(f"{root}/model/cycle-1/a.json") == b"changed in the store"  # unchanged locally: not re-sent
    assert fs.cat(f"{root}/model/cycle-1/b.json") == b"2"


def test_a_file_url_store_is_shared_between_processes(tmp_path):
    root = (tmp_path / "store").as_uri()
    script = (
        "import sys; from pipeline.storage import RunStorage; s = RunStorage(sys.argv[1], 'm', 'c'); s.pull(); "
        "(s.local_dir / 'windows.json').write_text('{}'); s.push()"
    )
    env = {**os.environ, "PIPELINE_WORK_DIR": str(tmp_path / "other-process")}
    subprocess.run([sys.executable, "-c", script, root], check=True, env=env)
    assert (tmp_path / "store" / "m" / "c" / "windows.json").read_text() == "{}"
    assert (tmp_path / "other-process" / "m" / "c" / "windows.json").exists()


def test_an_unknown_protocol_names_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path))
    with pytest.raises(DataSourceError, match="cannot open the storage root 'nosuchproto://x'"):
        RunStorage("nosuchproto://x", "m", "c").pull()


@pytest.mark.parametrize(
    "root, expected",
    [
        pytest.param("s3://bucket/runs/", "s3://bucket/runs/m/c", id="url-trailing-slash"),
        pytest.param("/srv/runs", "/srv/runs/m/c", id="local-path"),
    ],
)
def test_join(root, expected):
    assert join(root, "m", "c") == expected
