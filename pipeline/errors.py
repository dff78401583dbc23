"""Errors the pipeline raises on purpose, each with the CLI exit code it maps to.

Verdicts (validation stopped the cycle, the gate rejected the candidate) are not errors:
stages return them as values, and the CLI maps a cycle's final status to its exit code.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A fault: bad configuration, unreachable database, missing table, ..."""

    exit_code = 1


class ConfigError(PipelineError):
    exit_code = 2


class DataSourceError(PipelineError):
    """The source could not be read (unreachable URL, missing table or column)."""


class StorageError(PipelineError):
    """A cycle's file could not be written (a full disk, a store that refuses) or read back."""


class PromotionRefused(PipelineError):
    """A promotion, rejection or rollback was refused (no passing verdict, champion moved, ...)."""

    exit_code = 5


class CycleBusy(PipelineError):
    """Another process is running the same cycle: one runs it, the other stops before touching anything."""

    exit_code = 6


class RegistryUnreachable(PipelineError):
    """The MLflow tracking server did not answer: down, a wrong URI, or the network in between."""


class RegistryAccessDenied(PipelineError):
    """The MLflow tracking server refused the pipeline's login (401) or its user's permission (403)."""


class ModelArtifactError(PipelineError):
    """A registered model's files cannot be trusted or loaded; nothing was loaded and no alias moved."""


class ArtifactMismatch(ModelArtifactError):
    """A registered model's files differ from the manifest recorded at registration: changed, missing or added."""
