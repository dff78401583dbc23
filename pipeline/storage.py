"""Where a cycle keeps its files: a local folder, or an object store reached through fsspec.

Every stage reads and writes a local working folder. When the storage root is a
URL (``s3://bucket/runs``, ``gs://…``, ``file:///shared/runs``), the folder is a
mirror: opening a cycle pulls what earlier tasks stored — on whatever worker they
ran — and :meth:`RunStorage.push` uploads what changed since. GX, Evidently,
pandas and joblib then only ever see local paths, whatever the store.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DataSourceError

WORK_DIR_ENV = "PIPELINE_WORK_DIR"


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
    _pushed: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

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

    def pull(self) -> None:
        """Make the local folder hold what the store holds (what a task on another worker stored)."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        if not is_remote(self.root):
            return
        fs, path = self._filesystem()
        if fs.exists(path):
            for remote in fs.find(path):
                name = remote[len(path):].lstrip("/")
                target = self.local_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(remote, str(target))
        self._pushed = self._stats()

    def push(self) -> None:
        """Upload the files written or changed since the last pull or push."""
        if not is_remote(self.root):
            return
        fs, path = self._filesystem()
        stats = self._stats()
        for name, stat in stats.items():
            if self._pushed.get(name) != stat:
                fs.makedirs(f"{path}/{Path(name).parent}".rstrip("/."), exist_ok=True)
                fs.put_file(str(self.local_dir / name), f"{path}/{name}")
        self._pushed = stats

    def _stats(self) -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(self.local_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.local_dir.rglob("*") if p.is_file()
        }
