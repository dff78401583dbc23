"""What a reviewer and a notification recipient read about a cycle: Markdown and short texts built from its records.

The orchestrator puts these in the approval form and in messages; nothing here
knows which orchestrator that is.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import catalog, registry
from pipeline.errors import PipelineError
from pipeline.record import EARLIER_VERSIONS, EVIDENCE, SEARCH, CycleOutcome
from pipeline.results import EarlierVersions, Evidence, FeatureImportance, GateVerdict, SearchSummary
from pipeline.summary import QUALITY_TREND_CYCLES, format_number, format_significant

# The review pages inside Airflow (plugins/pipeline_review.py): links in an approval open there, in Airflow's origin.
REVIEW_PAGES = "/pipeline"


def approval_subject(outcome: CycleOutcome) -> str:
    cycle, verdict = outcome.cycle, outcome.verdict
    version = outcome.version.version if outcome.version else "?"
    against = f"vs champion v{verdict.champion_version}" if verdict and verdict.champion_version else "first champion"
    return f"Promote {cycle.config.model_name} v{version} ({against}, as of {cycle.as_of})?"


def approval_body(outcome: CycleOutcome) -> str:
    """The Markdown a reviewer decides on: gate numbers per fold, drift, data, trigger and links."""
    cycle, verdict, evaluation = outcome.cycle, outcome.verdict, outcome.evaluation
    if verdict is None or evaluation is None:
        raise PipelineError(f"cycle {cycle.cycle_id} has no gated candidate to approve")
    metric = verdict.primary_metric
    lines = [f"### Gate {'PASSED' if verdict.passed else 'REJECTED'} — {metric}"]
    if verdict.champion_version is None:
        lines.append(
            f"No champion yet: the candidate's {evaluation.k}-fold {metric} is "
            f"**{format_number(verdict.candidate_mean)} ± {format_number(verdict.candidate_std)}**."
        )
    else:
        lines.append(
            f"Candidate **{format_number(verdict.candidate_compare)}** vs champion v{verdict.champion_version} "
            f"**{format_number(verdict.champion_compare)}** on the same {verdict.compare_rows:,} unseen rows: "
            f"error {_percent(verdict.improvement)} lower (at least {_percent(verdict.improvement_lower)} "
            f"with {1 - verdict.alpha:.0%} confidence; the gate asks for more than {verdict.margin:.1%}), "
            f"one-sided p = {_p(verdict.p_value)} (alpha {verdict.alpha:g}, {verdict.test} test); "
            f"power to detect {_percent(verdict.detectable, signed=False)}: {_percent(verdict.power, signed=False)}."
        )
    lines += ["", f"| fold | candidate | champion{' v' + verdict.champion_version if verdict.champion_version else ''} |",
              "|---:|---:|---:|"]
    candidate_folds = verdict.fold_candidate or [f.metrics[metric] for f in evaluation.folds]
    champion_folds = verdict.fold_champion or [None] * len(candidate_folds)
    pairs = enumerate(zip(candidate_folds, champion_folds, strict=True), 1)
    lines += [f"| {i} | {format_number(c)} | {format_number(h)} |" for i, (c, h) in pairs]
    lines += ["", *[f"- {reason}" for reason in verdict.reasons]]
    search = cycle.read(SEARCH)
    if search is not None:
        lines += ["", f"**Search** — {search.describe()}. {_search_bias(search, verdict)}".rstrip()]
    evidence = cycle.read(EVIDENCE)
    if evidence is not None:
        lines += _evidence_section(evidence)
    earlier = cycle.read(EARLIER_VERSIONS)
    if earlier is not None and earlier.versions:
        lines += _earlier_section(earlier)
    lines += ["", "### Data"]
    for name, snap in outcome.windows.items() if outcome.windows else []:
        lines.append(f"- {name}: {snap.start}..{snap.end}, {snap.rows:,} rows, sha256 `{snap.sha256[:12]}…`")
    if outcome.validation is not None:
        lines.append(f"- {outcome.validation.summary().splitlines()[0]}")
    if outcome.drift is not None:
        drift = outcome.drift
        lines += ["", "### Drift", drift.summary(top=cycle.config.drift.top_features).splitlines()[0]]
        lines += [f"- {feature.describe()}" for feature in drift.top_drifted(cycle.config.drift.top_features)]
    lines += _quality_section(outcome)
    if outcome.trigger is not None:
        lines += ["", "### Trigger", *[f"- {line}" for line in outcome.trigger.describe().splitlines()]]
    version = outcome.version.version if outcome.version else None
    lines += ["", "### Reports", f"- [Drift report]({REVIEW_PAGES}/drift/{cycle.cycle_id})",
              f"- [Validation]({REVIEW_PAGES}/validation/{cycle.cycle_id})"]
    if version:
        lines.append(f"- [v{version}: its evidence, fold by fold]({REVIEW_PAGES}/models/{version})")
    run_url = registry.run_ui_url(cycle.config, cycle.run_id)
    lines.append(f"- {'[MLflow run](' + run_url + ')' if run_url else 'MLflow run'}: `{cycle.run_id}`")
    if run_url:
        lines.append(f"- [Every cycle's run in MLflow]({registry.runs_ui_url(cycle.config, cycle.run_id)})")
    return "\n".join(lines)


def _search_bias(search: SearchSummary, verdict: GateVerdict) -> str:
    """What choosing among the trials did to the numbers above."""
    if search.best_number is None:
        return ""
    if verdict.champion_version:
        return ("The trials were scored on held-out rows the comparison above does not use: choosing among them "
                "biases nothing the gate decided on.")
    return ("With no champion the floors judged the chosen trial's k-fold mean, the best of the trials' and so "
            "optimistic by the choice (README: Hyperparameter search).")


def _evidence_section(evidence: Evidence) -> list[str]:
    """Both models on the rows the champion never saw: every metric, the class errors or the residuals, over time."""
    champion = f"champion v{evidence.champion_version}"
    lines = ["", f"### Candidate and {champion} on the same {evidence.rows:,} unseen rows",
             f"| metric | candidate | {champion} |", "|---|---:|---:|"]
    lines += [f"| {name} | {format_number(value)} | {format_number(evidence.champion.metrics[name])} |"
              for name, value in evidence.candidate.metrics.items()]
    if evidence.candidate.confusion and evidence.champion.confusion:
        lines += ["", f"Confusion at the class threshold {evidence.threshold:g} (true negatives, false positives, "
                      "false negatives, true positives):"]
        for label, model in (("candidate", evidence.candidate), (champion, evidence.champion)):
            (tn, fp), (fn, tp) = model.confusion or [[0, 0], [0, 0]]
            lines.append(f"- {label}: {tn:,} · {fp:,} · {fn:,} · {tp:,}")
        lines.append(f"- {evidence.class_flips:.1%} of the rows change class from the champion to the candidate")
        gap = {label: max(abs(b.predicted - b.observed) for b in model.bins)
               for label, model in (("candidate", evidence.candidate), (champion, evidence.champion))}
        lines.append("- calibration: largest gap between predicted and observed positive rate over ten equal bins: "
                     + ", ".join(f"{label} {value:.3f}" for label, value in gap.items()))
    else:
        spans = {label: (min(b.observed for b in model.bins), max(b.observed for b in model.bins))
                 for label, model in (("candidate", evidence.candidate), (champion, evidence.champion))}
        lines.append("- residuals (truth − prediction), mean over each tenth of the rows by prediction: "
                     + ", ".join(f"{label} from {format_significant(low, signed=True)} to "
                                 f"{format_significant(high, signed=True)}" for label, (low, high) in spans.items()))
    lines.append(f"- the predictions differ by a Wasserstein distance of {evidence.prediction_shift:.2f} standard "
                 f"deviations of the champion's predictions")
    if evidence.importance is not None:
        lines += _importance_section(evidence.importance, champion)
    lines += ["", f"| time bucket | rows | candidate {evidence.primary_metric} | {champion} |", "|---|---:|---:|---:|"]
    lines += [f"| {bucket.start[:16]} – {bucket.end[:16]} | {bucket.rows:,} | {format_number(c)} | {format_number(h)} |"
              for bucket, c, h in zip(evidence.buckets, evidence.candidate.by_time, evidence.champion.by_time,
                                      strict=True)]
    return lines


def _importance_section(importance: FeatureImportance, champion: str) -> list[str]:
    lines = ["", f"Feature importance, the largest changes ({importance.method}; {importance.rows:,} of the rows):",
             f"| feature | candidate | {champion} | change | rank candidate / champion |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {f.feature} | {format_significant(f.candidate)} | {format_significant(f.champion)} | "
              f"{format_significant(f.candidate - f.champion, signed=True)} | {importance.rank(f.feature, 'candidate')} / "
              f"{importance.rank(f.feature, 'champion')} |" for f in importance.top_changes()]
    return lines


def _earlier_section(earlier: EarlierVersions) -> list[str]:
    lines = ["", "### Earlier versions beside the candidate, on the compared rows neither trained on",
             f"| version | role | rows | its {earlier.primary_metric} | candidate |", "|---|---|---:|---:|---:|"]
    for v in earlier.versions:
        if v.note:
            lines.append(f"| v{v.version} | {v.role} | - | {v.note} | |")
        else:
            lines.append(f"| v{v.version} | {v.role} | {v.rows:,} | {format_number(v.version_value)} | "
                         f"{format_number(v.candidate_value)} |")
    return lines


def _quality_section(outcome: CycleOutcome) -> list[str]:
    """The champion's live quality: this cycle's check and its newest checks, next to its k-fold estimate."""
    quality, verdict = outcome.quality, outcome.verdict
    version = quality.champion_version if quality is not None else verdict.champion_version if verdict else None
    if version is None:
        return []
    lines = ["", f"### Champion v{version} live quality"]
    if quality is not None:
        lines.append(quality.summary().removeprefix("Quality "))
    lines += ["", "| as of | cycle | live | k-fold | rows | error | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    for check in catalog.quality_trend(outcome.cycle.config, version, QUALITY_TREND_CYCLES):
        rows = "-" if check.live_rows is None else f"{check.live_rows:,}"
        lines.append(f"| {check.as_of} | {check.kind} `{check.cycle_id}` | {format_number(check.live_value)} | "
                     f"{format_number(check.kfold_value)} | {rows} | {_percent(check.degradation)} | "
                     f"{(check.quality or '-').replace('_', ' ')} |")
    return lines


@dataclass(frozen=True)
class Message:
    """A notification: a subject line and a plain-text body."""

    event: str
    subject: str
    text: str


def message(event: str, outcome: CycleOutcome, link: str | None = None) -> Message | None:
    """The notification for a cycle's ``event``, or None when its record says the event did not happen."""
    cycle = outcome.cycle
    model, version = cycle.config.model_name, outcome.version.version if outcome.version else None
    where = [f"Cycle {cycle.cycle_id} (as of {cycle.as_of})", *([f"Link: {link}"] if link else [])]
    if event == "drift_detected":
        if outcome.drift is None or not outcome.drift.dataset_drift:
            return None
        subject = f"drift detected in {len(outcome.drift.drifted_features)} features"
        body = outcome.drift.summary(top=cycle.config.drift.top_features)
    elif event == "gate_rejected":
        if outcome.verdict is None or outcome.verdict.passed:
            return None
        subject = "gate rejected the candidate; the champion stays"
        body = "\n".join(outcome.verdict.reasons)
    elif event == "approval_waiting":
        if outcome.verdict is None:
            return None
        subject = f"v{version} waits for approval"
        body = approval_subject(outcome) + "\n" + "\n".join(outcome.verdict.reasons)
    elif event == "promotion_done":
        if outcome.decision is None or outcome.decision.entry.action != "promote":
            return None
        subject = f"v{version} promoted to champion"
        body = outcome.decision.entry.describe()
    else:
        raise ValueError(f"unknown notification event {event!r}")
    return Message(event, f"[{model}] {subject}", "\n".join([*where, "", body]))


def _percent(value: float | None, signed: bool = True) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:+.1%}" if signed else f"{value:.0%}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
