"""Short human summaries of a cycle and of a model's state, for the terminal."""

from __future__ import annotations

import math

from pipeline import promote, registry
from pipeline.config import Config
from pipeline.data import redact_url


def format_number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _section(label: str, text: str) -> list[str]:
    first, *rest = text.splitlines()
    return [f"  {label:<11} {first.removeprefix(label).strip()}", *(f"      {line.strip()}" for line in rest)]


def format_outcome(outcome) -> str:
    cycle, config = outcome.cycle, outcome.cycle.config
    lines = [f"Cycle {cycle.cycle_id} (model {config.model_name}, as of {cycle.as_of}): {outcome.status.upper()}"]
    if cycle.path("trigger.json").exists():
        lines += _section("Trigger", describe_trigger(cycle.read_json("trigger.json")))
    if outcome.windows:
        current, reference = outcome.windows["current"], outcome.windows["reference"]
        lines.append(
            f"  Data        current {current.start}..{current.end}: {current.rows:,} rows · "
            f"reference {reference.start}..{reference.end}: {reference.rows:,} rows"
        )
    if outcome.validation is not None:
        lines += _section("Validation", outcome.validation.summary())
    if outcome.drift is not None:
        lines += _section("Drift", outcome.drift.summary(top=config.drift.top_features))
    if outcome.evaluation is not None:
        ev = outcome.evaluation
        per_fold = ", ".join(format_number(f.metrics[ev.primary_metric]) for f in ev.folds)
        lines.append(
            f"  Candidate   {config.training.family} on {ev.device}, {ev.k}-fold {ev.split}: "
            f"{ev.primary_metric} {format_number(ev.primary_mean)} ± {format_number(ev.primary_std)} (folds: {per_fold})"
        )
    verdict = outcome.verdict
    if verdict is not None:
        if verdict.champion_version is not None:
            lines.append(
                f"  Champion    v{verdict.champion_version} on the same {verdict.compare_rows:,} unseen rows: "
                f"{verdict.primary_metric} {format_number(verdict.champion_compare_mean)} "
                f"vs candidate {format_number(verdict.candidate_compare_mean)}"
            )
        else:
            lines.append("  Champion    none yet")
        lines.append(f"  Gate        {'PASSED' if verdict.passed else 'REJECTED'}")
        lines += [f"      {reason}" for reason in verdict.reasons]
    if outcome.version is not None:
        aliases = ", ".join(outcome.version.aliases) or "no alias"
        lines.append(f"  Registry    {config.model_name} v{outcome.version.version} ({aliases})")
    if outcome.promotion is not None:
        lines.append(f"  Promotion   {outcome.promotion.describe()}")
    elif outcome.status == "awaiting_approval":
        lines.append(
            f"  Promotion   waiting for a person: pipeline promote --version {outcome.version.version} "
            f"(or pipeline reject --version {outcome.version.version} --reason ...)"
        )
    lines.append("  Reports")
    for name in ("validation.html", "drift.html", "evaluation.json", "gate.json"):
        if cycle.path(name).exists():
            lines.append(f"      {name:<16} {cycle.storage.url_of(name)}")
    lines.append(f"      MLflow run       {redact_url(config.registry.tracking_uri)} run {cycle.run_id}")
    return "\n".join(lines)


def describe_trigger(trigger: dict) -> str:
    """What started an orchestrated cycle: ``trigger.json`` as the DAG's first task recorded it."""
    kind = trigger["kind"]
    lines = [f"{kind} run {trigger['run_id']}" + (f" by {trigger['user']}" if trigger.get("user") else "")]
    for event in trigger.get("events", []):
        extra = event.get("extra", {})
        features = ", ".join(extra.get("drifted_features", [])) or "none"
        lines.append(
            f"drift event from {event.get('source', '?')}: share {extra.get('drift_share', 0):.0%} "
            f"(cycle {extra.get('cycle_id', '?')}, as of {extra.get('as_of', '?')}); drifted: {features}"
        )
    if trigger.get("note"):
        lines.append(f"note: {trigger['note']}")
    return "\n".join(lines)


def format_status(config: Config, cycles: int = 5) -> str:
    lines = [f"Model {config.model_name} (tracking {redact_url(config.registry.tracking_uri)})"]
    current = {alias: registry.alias_version(config, alias) for alias in registry.ALIASES}
    for alias, info in current.items():
        if info is None:
            lines.append(f"  {alias:<18} none")
            continue
        tags = info.tags
        detail = (
            f"cycle {tags.get('cycle_id', '?')}, window {tags.get('window.start', '?')}..{tags.get('window.end', '?')}, "
            f"{tags.get('gate.primary_metric', 'metric')} {tags.get('gate.candidate_mean', '?')}"
        )
        pending = alias == registry.CHALLENGER and tags.get("approval") is None
        lines.append(f"  {alias:<18} v{info.version} ({detail}){'  PENDING APPROVAL' if pending else ''}")
        if pending:
            lines.append(
                f"  {'':<18} gate improvement {tags.get('gate.improvement') or 'n/a'}, p={tags.get('gate.p_value') or 'n/a'}"
                f" → pipeline promote --version {info.version} | pipeline reject --version {info.version} --reason ..."
            )
    lines.append("Last cycles")
    mlflow_client = registry.client(config)
    runs = mlflow_client.search_runs(
        [registry.experiment_id(config)], max_results=cycles, order_by=["attributes.start_time DESC"]
    )
    for run in runs:
        tags = run.data.tags
        lines.append(
            f"  {tags.get('cycle_id', run.info.run_name):<28} {tags.get('cycle.status', 'running'):<20} "
            f"drift: {tags.get('drift.verdict', '-'):<9} gate: {tags.get('gate.verdict', '-')}"
        )
    if not runs:
        lines.append("  none")
    lines.append("Promotion log (newest first)")
    entries = promote.history(config, limit=10)
    lines += [f"  {entry.describe()}" for entry in entries] or ["  empty"]
    return "\n".join(lines)
