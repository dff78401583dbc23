"""Short human summaries of a cycle and of a model's state, for the terminal."""

from __future__ import annotations

import math

from pipeline import catalog, locks, promote, registry
from pipeline.config import Config, redact_url
from pipeline.record import (
    DRIFT_REPORT,
    EVALUATION,
    FAILED_BATCH,
    GATE,
    QUALITY,
    VALIDATION_REPORT,
    CycleOutcome,
    RunSummary,
    Status,
    VersionTags,
)


def format_number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_significant(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """To the digits that tell models apart whatever the metric's scale (AUC 0.8047, RMSE 48.42, 1,706)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    sign = "+" if signed else ""
    if abs(value) >= 10 ** digits:
        return f"{value:{sign},.0f}"
    return f"{value:{sign}.{digits}g}" if abs(value) >= 1 else f"{value:{sign}.{digits}f}"


def _section(label: str, text: str) -> list[str]:
    first, *rest = text.splitlines()
    return [f"  {label:<11} {first.removeprefix(label).strip()}", *(f"      {line.strip()}" for line in rest)]


QUALITY_TREND_CYCLES = 5  # how many of a champion's newest quality checks a summary lists


def quality_trend_lines(config: Config, version: str, limit: int = QUALITY_TREND_CYCLES) -> list[str]:
    """The champion's newest quality checks, newest first: its live metric next to its k-fold estimate."""
    trend = catalog.quality_trend(config, version, limit)
    if not trend:
        return ["no quality check yet"]
    lines = []
    for check in trend:
        error = "n/a" if check.degradation is None else f"{check.degradation:+.1%}"
        rows = "-" if check.live_rows is None else f"{check.live_rows:,}"
        lines.append(f"{check.as_of} {check.kind:<7} live {format_number(check.live_value)} vs k-fold "
                     f"{format_number(check.kfold_value)} on {rows} rows, error {error}: "
                     f"{(check.quality or '-').replace('_', ' ')}  ({check.cycle_id})")
    return lines


def describe_status(outcome: CycleOutcome) -> str:
    if outcome.status == Status.RUNNING and not locks.is_running(outcome.cycle.config, outcome.cycle.cycle_id):
        return "INTERRUPTED (recorded as running, but no process holds it: run it again to finish it)"
    detail = f" ({outcome.detail})" if outcome.detail and outcome.status in (Status.PAUSED, Status.FAILED) else ""
    return outcome.status.value.upper() + detail


def format_outcome(outcome: CycleOutcome) -> str:
    cycle, config = outcome.cycle, outcome.cycle.config
    lines = [f"Cycle {cycle.cycle_id} (model {config.model_name}, as of {cycle.as_of}): {describe_status(outcome)}"]
    if outcome.trigger is not None:
        lines += _section("Trigger", outcome.trigger.describe())
    if outcome.windows is not None:
        current, reference = outcome.windows.current, outcome.windows.reference
        lines.append(
            f"  Data        current {current.label()}: {current.rows:,} rows · "
            f"reference {reference.label()}: {reference.rows:,} rows"
        )
        lines += [f"      note: {note}" for note in outcome.windows.notes]
    if outcome.validation is not None:
        lines += _section("Validation", outcome.validation.summary())
    if outcome.drift is not None:
        lines += _section("Drift", outcome.drift.summary(top=config.drift.top_features))
    if outcome.quality is not None:
        lines += _section("Quality", outcome.quality.summary())
        if outcome.quality.champion_version is not None:
            lines.append(f"      trend of v{outcome.quality.champion_version}'s {outcome.quality.primary_metric}, newest first:")
            lines += [f"        {line}" for line in quality_trend_lines(config, outcome.quality.champion_version)]
    if outcome.evaluation is not None:
        ev = outcome.evaluation
        per_fold = ", ".join(format_number(f.metrics[ev.primary_metric]) for f in ev.folds)
        lines.append(
            f"  Candidate   {config.training.family} on {ev.device}, {ev.k}-fold {ev.split}: "
            f"{ev.primary_metric} {format_number(ev.primary_mean)} ± {format_number(ev.primary_std)} (folds: {per_fold})"
        )
        if ev.tuning:
            lines.append(f"  Search      {ev.tuning}")
    verdict = outcome.verdict
    if verdict is not None:
        if verdict.champion_version is not None:
            lines.append(
                f"  Champion    v{verdict.champion_version} realised {verdict.primary_metric} "
                f"{format_number(verdict.champion_compare)} on the {verdict.compare_rows:,} rows since its window "
                f"(candidate {format_number(verdict.candidate_compare)} on the same rows)"
            )
        else:
            lines.append("  Champion    none yet")
        lines.append(f"  Gate        {'PASSED' if verdict.passed else 'REJECTED'}")
        lines += [f"      {reason}" for reason in verdict.reasons]
    if outcome.version is not None:
        aliases = ", ".join(outcome.version.aliases) or "no alias"
        lines.append(f"  Registry    {config.model_name} v{outcome.version.version} ({aliases})")
    if outcome.decision is not None:
        approval = outcome.decision.approval
        lines.append(f"  Promotion   {outcome.decision.entry.describe()} [{approval.source}]")
    elif outcome.status == Status.AWAITING_APPROVAL and outcome.version is not None:
        lines.append(
            f"  Promotion   waiting for a person: pipeline promote --version {outcome.version.version} "
            f"(or pipeline reject --version {outcome.version.version} --reason ...)"
        )
    elif outcome.status == Status.SUPERSEDED:
        lines.append(f"  Promotion   superseded: {outcome.detail}")
    lines.append("  Reports")
    stopped = outcome.validation is not None and not outcome.validation.passed
    recorded = {VALIDATION_REPORT: outcome.validation, FAILED_BATCH: stopped or None, DRIFT_REPORT: outcome.drift,
                QUALITY.name: outcome.quality, EVALUATION.name: outcome.evaluation, GATE.name: outcome.verdict}
    lines += [f"      {name:<20} {cycle.url_of(name)}" for name, result in recorded.items() if result is not None]
    lines.append(f"      {'MLflow run':<20} {redact_url(config.registry.tracking_uri)} run {cycle.run_id}")
    return "\n".join(lines)


def format_status(config: Config, cycles: int = 5) -> str:
    lines = [f"Model {config.model_name} (tracking {redact_url(config.registry.tracking_uri)})"]
    mismatch = promote.champion_mismatch(config)
    if mismatch:
        lines.append(f"  WARNING: {mismatch}")
    current = {alias: registry.alias_version(config, alias) for alias in registry.ALIASES}
    for alias, info in current.items():
        if info is None:
            lines.append(f"  {alias:<18} none")
            continue
        tags = VersionTags.of(info)
        window = f"{tags.window_start or '?'}..{tags.window_end or '?'}"
        detail = (f"cycle {tags.cycle_id or '?'}, window {window}, "
                  f"{tags.primary_metric or 'metric'} {format_number(tags.candidate_mean)}")
        pending = alias == registry.CHALLENGER and tags.approval is None
        lines.append(f"  {alias:<18} v{info.version} ({detail}){'  PENDING APPROVAL' if pending else ''}")
        if pending:
            p_value = "n/a" if tags.p_value is None else f"{tags.p_value:.3g}"
            lines.append(
                f"  {'':<18} gate improvement {format_number(tags.improvement)}, p={p_value}"
                f" → pipeline promote --version {info.version} | pipeline reject --version {info.version} --reason ..."
            )
    champion = current[registry.CHAMPION]
    if champion is not None:
        tags = VersionTags.of(champion)
        lines.append(f"Champion v{champion.version} live quality ({tags.primary_metric or 'metric'} "
                     f"{format_number(tags.candidate_mean)} k-fold when trained; newest first)")
        lines += [f"  {line}" for line in quality_trend_lines(config, champion.version)]
    lines.append("Last cycles")
    runs = registry.find_runs(config, "retrain", max_results=cycles)
    for summary in (RunSummary.of(run, "retrain") for run in runs):
        drift = {True: "drift", False: "no_drift", None: "-"}[summary.dataset_drift]
        lines.append(f"  {summary.cycle_id:<28} {summary.status:<20} drift: {drift:<9} "
                     f"quality: {summary.quality or '-':<11} gate: {summary.gate or '-'}")
    if not runs:
        lines.append("  none")
    lines.append("Promotion log (newest first)")
    entries = promote.history(config, limit=10)
    lines += [f"  {entry.describe()}" for entry in entries] or ["  empty"]
    return "\n".join(lines)
