"""A registered model's files as the registry recorded them, checked before any of them is loaded.

The artifact store is not trusted: whoever can write to it could swap ``model.skops`` for another
valid model (the gate would score the impostor), truncate it, or add files. The registry's database
is the anchor: at registration each version gets a manifest — the sha256 and size of every file of
its logged model — as a tag, with the manifest's own digest beside it. A load downloads the files,
compares them with that manifest and only then deserializes ``model.skops``, itself, with skops and
the types listed here: neither the trusted types written in the artifact's ``MLmodel`` nor the
``code/`` folder shipped inside it (which MLflow's loader would put first on ``sys.path``) is used.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ArtifactMismatch, ModelArtifactError

MANIFEST_TAG, MANIFEST_DIGEST_TAG = "artifact.manifest", "artifact.manifest_sha256"
# MLflow's loader (pyfunc.load_model of a models:/ URI) writes the name and version it resolved into the model's own
# directory when the artifact store is local: data MLflow adds on use, never read by the pipeline's load.
MLFLOW_LOAD_MARKER = "registered_model_meta"
MODEL_FILE = "model.skops"

# Beyond skops' own defaults, exactly the types the model families of ``pipeline.families`` produce
# inside ``pipeline.train.build_model``'s Pipeline, and the fold ensemble that holds k of them;
# tests/pipeline/test_artifacts.py fits each family to keep this true.
TRUSTED_TYPES = (
    "pipeline.train.FeatureCoercer",
    "pipeline.train.OrdinalCodes",
    "pipeline.train.FoldEnsemble",
    "numpy.dtype",  # a linear model's fitted coefficients
    "sklearn.tree._tree.Tree",  # random forests
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "functools.partial",  # HistGradientBoosting's input check: a partial of check_array
    "sklearn.utils.validation.check_array",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
)


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """Every file of a logged model, by its path inside the model's directory."""

    files: dict[str, FileDigest]

    @classmethod
    def of_directory(cls, directory: Path) -> Manifest:
        files = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
            files[path.relative_to(directory).as_posix()] = FileDigest(digest.hexdigest(), path.stat().st_size)
        return cls(files)

    def to_json(self) -> str:
        return json.dumps({name: [f.sha256, f.bytes] for name, f in sorted(self.files.items())}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls({name: FileDigest(sha256, size) for name, (sha256, size) in json.loads(text).items()})

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def tags(self) -> dict[str, str]:
        return {MANIFEST_TAG: self.to_json(), MANIFEST_DIGEST_TAG: self.digest}


def recorded_manifest(model_name: str, version: str, tags: dict[str, str]) -> Manifest:
    """The manifest the registry holds for a version; refused when there is none or it is inconsistent."""
    text, digest = tags.get(MANIFEST_TAG), tags.get(MANIFEST_DIGEST_TAG)
    if not text or not digest:
        raise ModelArtifactError(
            f"version {version} of {model_name!r} has no recorded artifact manifest (tag {MANIFEST_TAG}), so its files "
            "cannot be verified; refusing to load it — it was registered outside the pipeline or before manifests "
            "were recorded: register the model again"
        )
    manifest = Manifest.from_json(text)
    if manifest.digest != digest:
        raise ModelArtifactError(
            f"version {version} of {model_name!r}: its recorded manifest does not match its digest "
            f"({MANIFEST_DIGEST_TAG}={digest}, the manifest hashes to {manifest.digest}); refusing to load it"
        )
    return manifest


def verify(directory: Path, recorded: Manifest, model_name: str, version: str) -> None:
    """Refuse a downloaded model directory whose files differ from the recorded ones: changed, missing or added."""
    found = Manifest.of_directory(directory).files
    problems = []
    for name, expected in sorted(recorded.files.items()):
        actual = found.get(name)
        if actual is None:
            problems.append(f"{name} is missing")
        elif actual != expected:
            problems.append(
                f"{name} changed (sha256 {actual.sha256[:12]}…, {actual.bytes:,} bytes; "
                f"recorded {expected.sha256[:12]}…, {expected.bytes:,} bytes)"
            )
    added = set(found) - set(recorded.files) - {MLFLOW_LOAD_MARKER}
    problems += [f"{name} was added" for name in sorted(added)]
    if problems:
        raise ArtifactMismatch(
            f"version {version} of {model_name!r}: the artifact store's files differ from those recorded at "
            f"registration — {'; '.join(problems)}; it is not used and no alias moves"
        )


@contextmanager
def quiet_skops() -> Iterator[None]:
    """Around any skops import, dump or load.

    skops finds a ufunc's module by probing every loaded module (on import, too); under Airflow that
    trips a FutureWarning from each of Airflow's deprecated aliases: over a thousand log lines.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def untrusted_types(model: Any) -> list[str]:
    """The types skops would refuse in ``model`` without being told to trust them; refused unless all are ours."""
    with quiet_skops():
        import skops.io

        found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unknown = sorted(set(found) - set(TRUSTED_TYPES))
    if unknown:
        raise ModelArtifactError(
            f"the model holds types outside the pipeline's allow-list ({', '.join(unknown)}): it could not be loaded "
            "back, so it is not registered — add them to pipeline.artifacts.TRUSTED_TYPES if they are expected"
        )
    return found


def load_model_file(directory: Path, model_name: str, version: str) -> Any:
    """Deserialize a verified directory's model, trusting only TRUSTED_TYPES; any failure names version and file."""
    path = directory / MODEL_FILE
    try:
        with quiet_skops():
            import skops.io

            return skops.io.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # BadZipFile, untrusted types, a missing class: every one means "cannot be loaded"
        raise ModelArtifactError(
            f"version {version} of {model_name!r}: {MODEL_FILE} cannot be loaded ({type(exc).__name__}: {exc})"
        ) from exc
