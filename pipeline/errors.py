"""Errors the pipeline raises on purpose, each with the CLI exit code it maps to.

Verdicts (validation stopped the cycle, the gate rejected the candidate) are not
faults: the CLI gives them their own exit codes so schedulers can tell them apart.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A fault: bad configuration, unreachable database, missing table, ..."""

    exit_code = 1


class ConfigError(PipelineError):
    exit_code = 2


class DataSourceError(PipelineError):
    """The source could not be read (unreachable URL, missing table or column)."""


class ValidationStopped(PipelineError):
    """A critical expectation failed: the cycle stops before training."""

    exit_code = 3


class GateRejected(PipelineError):
    """The candidate did not pass the evaluation gate."""

    exit_code = 4


class PromotionRefused(PipelineError):
    """A promotion, rejection or rollback was refused (no passing verdict, champion moved, ...)."""

    exit_code = 5
