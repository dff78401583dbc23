"""Run directories on a local folder and on fsspec stores (memory:// in process, file:// across processes), written atomically."""

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
    storage.write_bytes("gate.json", b"{}")
    assert storage.local_dir == tmp_path / "runs" / "model" / "cycle-1"
    assert storage.fetch("gate.json") == storage.local_dir / "gate.json"
    assert storage.fetch("missing.json") is None
    assert storage.url_of("gate.json") == str(tmp_path / "runs" / "model" / "cycle-1" / "gate.json")


def test_a_store_url_is_cached_in_a_work_folder(tmp_path, monkeypatch):
    root = f"memory://bucket-{uuid.uuid4().hex}/runs"
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "worker-a"))
    writer = RunStorage(root, "model", "cycle-1")
    writer.write_bytes("drift.html", b"<html>drift</html>")
    writer.write_bytes("gate.json", b'{"passed": true}')
    assert writer.url_of("gate.json") == f"{root}/model/cycle-1/gate.json"

    # Another task, on another worker: it finds what the first one stored, and fetches only what it reads.
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "worker-b"))
    reader = RunStorage(root, "model", "cycle-1")
    assert reader.fetch("gate.json").read_text() == '{"passed": true}'
    assert reader.local_dir.is_relative_to(tmp_path / "worker-b")
    assert not (reader.local_dir / "drift.html").exists()


def test_a_file_is_fetched_once_per_instance_and_fresh_in_the_next(tmp_path, monkeypatch):
    import fsspec

    root = f"memory://bucket-{uuid.uuid4().hex}/runs"
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path))
    RunStorage(root, "model", "cycle-1").write_bytes("a.json", b"1")
    first = RunStorage(root, "model", "cycle-1")
    assert first.fetch("a.json").read_text() == "1"
    fsspec.filesystem("memory").pipe(f"{root}/model/cycle-1/a.json", b"written by another worker")
    assert first.fetch("a.json").read_text() == "1"  # this process already holds its copy
    assert RunStorage(root, "model", "cycle-1").fetch("a.json").read_text() == "written by another worker"


def test_a_file_url_store_is_shared_between_processes(tmp_path):
    root = (tmp_path / "store").as_uri()
    script = "import sys; from pipeline.storage import RunStorage; RunStorage(sys.argv[1], 'm', 'c').write_bytes('w.json', b'{}')"
    env = {**os.environ, "PIPELINE_WORK_DIR": str(tmp_path / "other-process")}
    subprocess.run([sys.executable, "-c", script, root], check=True, env=env)
    assert (tmp_path / "store" / "m" / "c" / "w.json").read_text() == "{}"
    assert (tmp_path / "other-process" / "m" / "c" / "w.json").exists()


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    storage = RunStorage(str(tmp_path), "m", "c")
    storage.write_bytes("status.json", b'{"status": "running"}')
    with pytest.raises(RuntimeError), storage.writing("status.json") as temporary:
        temporary.write_bytes(b'{"stat')
        raise RuntimeError("killed halfway")
    assert (storage.local_dir / "status.json").read_bytes() == b'{"status": "running"}'
    assert sorted(p.name for p in storage.local_dir.iterdir()) == ["status.json"]


def test_an_unknown_protocol_names_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path))
    with pytest.raises(DataSourceError, match="cannot open the storage root 'nosuchproto://x'"):
        RunStorage("nosuchproto://x", "m", "c").fetch("gate.json")


@pytest.mark.parametrize(
    "root, expected",
    [
        pytest.param("s3://bucket/runs/", "s3://bucket/runs/m/c", id="url-trailing-slash"),
        pytest.param("/srv/runs", "/srv/runs/m/c", id="local-path"),
    ],
)
def test_join(root, expected):
    assert join(root, "m", "c") == expected
