"""Where a cycle keeps its files: a local folder, or an object store reached through fsspec.

Every stage reads and writes a local working folder. When the storage root is a URL
(``s3://bucket/runs``, ``gs://…``, ``file:///shared/runs``), the folder is a cache: a
file is fetched from the store the first time a process reads it — whatever worker
wrote it — and uploaded as soon as it is written. A task therefore moves only the
files it uses (a Parquet snapshot stays put unless a stage reads its rows). GX,
Evidently, pandas and joblib only ever see local paths, whatever the store.

Every write is atomic: the content goes to a temporary file beside the target, which
then replaces it. A crash or a full disk leaves the previous version or nothing, never
a truncated file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DataSourceError, StorageError

WORK_DIR_ENV = "PIPELINE_WORK_DIR"
_FULL = (errno.ENOSPC, errno.EDQUOT)
# mkstemp creates files readable by their owner only; a recorded file gets the permissions a plain write would.
_UMASK = os.umask(0)
os.umask(_UMASK)


def is_remote(root: str) -> bool:
    return "://" in root


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if is_remote(root) else str(Path(root, *parts))


@dataclass
class RunStorage:
    """A cycle's files: ``<root>/<model>/<cycle id>``, worked on in :attr:`local_dir`."""

    root: str
    model_name: str
    cycle_id: str
    _fetched: set[str] = field(default_factory=set, repr=False)

    @property
    def location(self) -> str:
        return join(self.root, self.model_name, self.cycle_id)

    @property
    def local_dir(self) -> Path:
        if not is_remote(self.root):
            return Path(self.location)
        work = Path(os.environ.get(WORK_DIR_ENV) or Path(tempfile.gettempdir()) / "pipeline-work")
        return work / self.model_name / self.cycle_id

    def url_of(self, name: str) -> str:
        """Where a file of this cycle is kept (a path for a local root)."""
        return join(self.location, name) if is_remote(self.root) else str((self.local_dir / name).resolve())

    def _filesystem(self):
        from fsspec.core import url_to_fs

        try:
            return url_to_fs(self.location)
        except (ImportError, ValueError) as exc:
            raise DataSourceError(f"cannot open the storage root {self.root!r}: {exc}") from None

    def fetch(self, name: str) -> Path | None:
        """The local copy of ``name``, fetched from the store on this instance's first use; None when absent."""
        local = self.local_dir / name
        if is_remote(self.root) and name not in self._fetched:
            fs, path = self._filesystem()
            remote = f"{path}/{name}"
            if fs.exists(remote):
                with self.writing(name, upload=False) as target:
                    fs.get_file(remote, str(target))
            else:
                local.unlink(missing_ok=True)  # a copy from another cycle attempt that the store no longer has
            self._fetched.add(name)
        return local if local.is_file() else None

    @contextmanager
    def writing(self, name: str, upload: bool = True) -> Iterator[Path]:
        """A temporary path to write ``name`` to; on success it replaces the file (and is uploaded)."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        target = self.local_dir / name
        handle, temporary = tempfile.mkstemp(dir=self.local_dir, prefix=f".{name}.", suffix=".tmp")
        os.close(handle)
        try:
            yield Path(temporary)
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
            os.chmod(temporary, 0o666 & ~_UMASK)
            os.replace(temporary, target)
        except OSError as exc:
            raise self._write_error(name, exc) from None
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
        self._fetched.add(name)
        if upload:
            self._upload(name)

    def write_bytes(self, name: str, content: bytes) -> None:
        with self.writing(name) as temporary:
            temporary.write_bytes(content)

    def _upload(self, name: str) -> None:
        if not is_remote(self.root):
            return
        fs, path = self._filesystem()
        try:
            fs.makedirs(path, exist_ok=True)
            fs.put_file(str(self.local_dir / name), f"{path}/{name}")
        except OSError as exc:
            raise self._write_error(name, exc) from None

    def _write_error(self, name: str, exc: OSError) -> StorageError:
        cause = "the storage is full" if exc.errno in _FULL else "it failed"
        return StorageError(
            f"cannot write {name} of cycle {self.cycle_id} to {self.location}: {cause} ({exc.strerror or exc}); "
            "the cycle's earlier records are intact"
        )
