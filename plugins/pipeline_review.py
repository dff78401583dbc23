"""The review UI inside Airflow: a FastAPI app mounted at /pipeline by an Airflow plugin.

It renders what the pipeline recorded (through ``pipeline.catalog``); it decides
nothing. Every route needs an authenticated Airflow user (Airflow does not protect
plugin apps by itself), the API docs are off, pages carry no scripts, and Evidently's
reports — which quote column and category names from the data — are served with a
sandboxing Content-Security-Policy, so nothing in them runs in Airflow's origin.
"""

from __future__ import annotations

import html
import math
import urllib.parse

import review_ui as ui
from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

PREFIX = ui.PREFIX
e = html.escape
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; base-uri 'none'; "
               "form-action 'self'")
# A sandbox without allow-same-origin: the report's scripts (Evidently draws with them) run in an opaque origin.
REPORT_POLICY = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                 "img-src data:; font-src data:")

app = FastAPI(
    title="Pipeline review", docs_url=None, redoc_url=None, openapi_url=None,
    dependencies=[Depends(requires_authenticated())],
)


def _config():
    """The config the DAGs use ($PIPELINE_CONFIG, default the demo's), read per request: it may change."""
    from pipeline.config import default_config_path, load_config

    return load_config(default_config_path())


def _page(title: str, body: str, active: str | None = None, lead: str = "") -> HTMLResponse:
    return HTMLResponse(ui.page(title, body, active, lead),
                        headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})


def _cycle_label(cycle) -> str:
    return f"{cycle.as_of} {cycle.kind}"


def _window(window) -> str:
    return "—" if window is None else f"{window[0]} – {window[1]}"


def _drifted_features(cycle, shown: int = 5) -> str:
    """The drifted features, furthest past their threshold first; the rest counted, not dropped."""
    from pipeline.record import metric_key

    def severity(feature: str) -> float:
        threshold = cycle.drift_thresholds.get(feature)
        score = cycle.drift_scores.get(feature, 0.0)
        return score / threshold if threshold else score

    ranked = sorted(cycle.drifted_features, key=lambda f: severity(metric_key(f)), reverse=True)
    listed = e(", ".join(ranked[:shown]))
    rest = len(ranked) - shown
    return listed + (f' <span title="{e(", ".join(ranked[shown:]))}">+{rest} more</span>' if rest > 0 else "")


METHOD_AXES = {"wasserstein": "Wasserstein distance (in reference sd)", "jensenshannon": "Jensen-Shannon distance"}


@app.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/drift")


PAGE_SIZE = 50
KIND_CHOICES = (("retrain", "retrain"), ("monitor", "monitor"))


def _listing(path: str, kind: str, status: str, since: str, until: str, q: str, page: int, what: str):
    """The cycles of one page of a list, filtered as its form says, with the form and the pager to show."""
    from datetime import date

    from pipeline import catalog
    from pipeline.cycle_index import CycleFilter

    def day(value: str, name: str) -> date | None:
        try:
            return date.fromisoformat(value) if value else None
        except ValueError:
            raise HTTPException(400, f"{name} must be a date (YYYY-MM-DD), got {value!r}") from None

    where = CycleFilter(kind or None, status or None, day(since, "since"), day(until, "until"), q.strip() or None)
    found = catalog.cycle_page(_config(), where, page, PAGE_SIZE)
    query = {"kind": kind, "status": status, "since": since, "until": until, "q": q}
    statuses = [(value, label) for value, (label, _) in ui.STATUS_LABELS.items()]
    controls = ui.filter_form(path, query, {"kind": KIND_CHOICES, "status": statuses})
    return found, controls, ui.pager(path, query, found.number, found.pages, found.total, what)


@app.get("/drift", response_class=HTMLResponse)
def drift_page(kind: str = "", status: str = "", since: str = "", until: str = "", q: str = "",
               page: int = 1) -> HTMLResponse:
    from pipeline.record import metric_key

    config = _config()
    listed, controls, pager = _listing(f"{PREFIX}/drift", kind, status, since, until, q, page, "cycle")
    recorded = listed.cycles
    rows = []
    for cycle in recorded:
        share = "" if cycle.drift_share is None else ui.percent(cycle.drift_share)
        report = ui.link(f"{PREFIX}/drift/{cycle.cycle_id}", "report") if cycle.dataset_drift is not None else ""
        rows.append([str(cycle.as_of), e(cycle.kind), ui.status_badge(cycle.status), e(cycle.trigger),
                     _window(cycle.reference_window), share, _drifted_features(cycle), report])
    listing = ui.table(["as of", "kind", "status", "trigger", "reference window", ui.Column("drifted share", True),
                        "drifted features (furthest first)", ""], rows, empty="No cycle matches.")
    measured = sorted((c for c in recorded if c.drift_scores), key=lambda c: (c.as_of, c.started))
    labels = [_cycle_label(c) for c in measured]
    order = [metric_key(f) for f in config.source.features.all]
    features = [f for f in order if any(f in c.drift_scores for c in measured)]
    features += sorted({f for c in measured for f in c.drift_scores} - set(features))
    drifted = [{metric_key(f) for f in c.drifted_features} for c in measured]
    cells, anchors = {}, {feature: f"#feature-{i}" for i, feature in enumerate(features)}
    for cycle, label, flagged in zip(measured, labels, drifted, strict=True):
        for feature, score in cycle.drift_scores.items():
            threshold = cycle.drift_thresholds.get(feature)
            method = cycle.drift_methods.get(feature, "distance")
            # Cycles recorded before thresholds were logged: only a drifted feature gets a colour.
            severity = score / threshold if threshold else (math.inf if feature in flagged else None)
            cells[(feature, label)] = ui.HeatCell(
                severity, feature in flagged,
                f"{feature} · {label}: {method} {score:.3g}" + (f" (threshold {threshold:.3g})" if threshold else ""))
    details = []
    for i, feature in enumerate(features):
        scores = [c.drift_scores.get(feature) for c in measured]
        thresholds = [c.drift_thresholds[feature] for c in measured if feature in c.drift_thresholds]
        method = next((c.drift_methods[feature] for c in reversed(measured) if feature in c.drift_methods), None)
        times = sum(feature in flagged for flagged in drifted)
        summary = (f"{e(feature)} · {e(method or 'distance')}"
                   + (f", threshold {thresholds[-1]:.3g}" if thresholds else "")
                   + f" · drifted in {times} of {sum(s is not None for s in scores)} cycles")
        chart = ui.line_chart(labels, [ui.Series(feature, scores)], METHOD_AXES.get(method or "", "drift score"),
                              "cycle (as of, kind)", thresholds[-1] if thresholds else None)
        details.append(f'<details id="feature-{i}"><summary>{summary}</summary>{chart}</details>')
    heat = ui.heat_map(features, labels, cells, anchors)
    body = (controls + "<h2>Drift per feature and cycle</h2>" + heat + "<h2>Cycles</h2>" + pager + listing
            + "<h2>Per feature</h2><p class=lead>Each feature's distance between the reference window and the current "
            "one, cycle by cycle, against its threshold. Numbers use the Wasserstein distance in reference standard "
            "deviations, categories the Jensen-Shannon distance; a feature drifts when it is past its threshold and "
            "the two-sample test is significant.</p>" + "".join(details))
    return _page("Drift", body, "drift", f"Cycles of {e(config.model_name)}, newest first: the reference window "
                 "against the current one")


@app.get("/drift/{cycle_id}", response_class=HTMLResponse)
def drift_report_page(cycle_id: str) -> HTMLResponse:
    from pipeline import catalog

    config = _config()
    try:
        catalog.report_file(config, cycle_id, "drift.html")
        cycle = catalog.cycle(config, cycle_id)
    except catalog.NotRecorded:
        raise HTTPException(404, "no such drift report") from None
    lead = (f"{ui.link(PREFIX + '/drift', '← all cycles')} · {e(_cycle_label(cycle))} · reference "
            f"{_window(cycle.reference_window)} against current {_window(cycle.current_window)} · "
            f"{ui.status_badge(cycle.status)}")
    frame = f'<iframe class="report" sandbox="allow-scripts" src="{PREFIX}/reports/{e(cycle_id)}/drift.html"></iframe>'
    return _page(f"Drift report of {cycle_id}", frame, "drift", lead)


def _validation_verdict(cycle) -> str:
    if cycle.validation != "passed":
        return ui.badge("stopped", "bad")
    if cycle.validation_warnings:
        return ui.badge(f"passed with {cycle.validation_warnings} warning{'s' * (cycle.validation_warnings != 1)}", "warn")
    return ui.badge("passed", "good")


@app.get("/validation", response_class=HTMLResponse)
def validation_page(kind: str = "", status: str = "", since: str = "", until: str = "", q: str = "",
                    page: int = 1) -> HTMLResponse:
    listed, controls, pager = _listing(f"{PREFIX}/validation", kind, status, since, until, q, page, "cycle")

    def count(value: int | None) -> str:
        return "—" if value is None else f"{value:,}"

    rows = [[str(c.as_of), e(c.kind), ui.status_badge(c.status), _validation_verdict(c), count(c.validation_critical),
             count(c.validation_warnings), count(c.current_rows), ui.link(f"{PREFIX}/validation/{c.cycle_id}", c.cycle_id)]
            for c in listed.cycles if c.validation]
    columns = ["as of", "kind", "status", "validation", ui.Column("critical", True), ui.Column("warnings", True),
               ui.Column("rows", True), "cycle"]
    return _page("Validation", controls + pager + ui.table(columns, rows, empty="No cycle matches."), "validation")


@app.get("/validation/{cycle_id}", response_class=HTMLResponse)
def validation_detail(cycle_id: str) -> HTMLResponse:
    from pipeline import catalog

    config = _config()
    try:
        result, kept = catalog.validation(config, cycle_id)
        cycle = catalog.cycle(config, cycle_id)
    except catalog.NotRecorded:
        raise HTTPException(404, "no such validation") from None
    outcomes = sorted(result.outcomes, key=lambda o: (o.success, o.severity != "critical"))
    rows = [[ui.badge("passed", "good") if o.success else ui.badge(f"failed ({o.severity})",
                                                                   "bad" if o.severity == "critical" else "warn"),
             e(o.message), "" if o.unexpected_count is None else f"{o.unexpected_count:,}",
             e(", ".join(map(str, o.sample_values[:5])))] for o in outcomes]
    batch = f"<p>The failing batch is kept at <code>{e(str(kept))}</code>.</p>" if kept else ""
    links = [ui.link(PREFIX + "/validation", "← all validations"),
             ui.link(f"{PREFIX}/reports/{cycle_id}/validation.html", "full report")]
    if cycle.dataset_drift is not None:
        links.append(ui.link(f"{PREFIX}/drift/{cycle_id}", "this cycle's drift report"))
    lead = " · ".join(links) + f" · {ui.status_badge(cycle.status)}"
    outcomes_table = ui.table(["result", "expectation", ui.Column("unexpected rows", True), "sample values"], rows)
    return _page(f"Validation of {cycle_id}", f"<p>{e(result.summary().splitlines()[0])}</p>{batch}{outcomes_table}",
                 "validation", lead)


def airflow_run_link(dag_id: str, run_id: str, page: str = "", label: str = "Airflow run") -> str:
    """A link to Airflow's own page of a run (or of one of its tasks, with ``page``)."""
    quote = urllib.parse.quote
    path = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}{page}"
    return f'<a href="{html.escape(path)}">{html.escape(label)}</a>'


def lineage(config, cycle, mlflow_run_id: str | None) -> str:
    """Links to the Airflow run and the MLflow run that produced a version."""
    from pipeline import registry

    links = []
    if cycle and cycle.airflow_run_id:
        links.append(airflow_run_link(cycle.airflow_dag_id, cycle.airflow_run_id))
    if mlflow_run_id and (url := registry.run_ui_url(config, mlflow_run_id)):
        links.append(f'<a href="{html.escape(url)}" target="_blank" rel="noopener">MLflow run</a>')
    return " · ".join(links)


ALIAS_STATES = {"champion": ("champion", "good"), "challenger": ("pending approval", "info"),
                "previous-champion": ("previous champion", "muted")}


def _fold_chart(config, version: str, cycle_id: str) -> str:
    """The candidate's k-fold folds, and on the compared rows (never seen by the champion) both models fold by fold."""
    from pipeline import catalog

    try:
        evaluation = catalog.evaluation(config, cycle_id)
        verdict = catalog.gate_verdict(config, cycle_id)
    except catalog.NotRecorded:
        return "<p>This version's evaluation is not in the run directory.</p>"
    primary = evaluation.primary_metric
    labels = [f"fold {f.fold}" for f in evaluation.folds]
    kfold = [f.metrics.get(primary) for f in evaluation.folds]
    if not verdict.champion_version:
        series = [ui.Series(f"v{version} k-fold (held-out fold)", kfold)]
    elif all(f.compare_rows == f.test_rows for f in evaluation.folds):
        # The champion saw none of the window: both of the candidate's lines would be one, the second hiding the first.
        series = [ui.Series(f"v{version} k-fold (held-out fold, none seen by the champion)", kfold),
                  ui.Series(f"champion v{verdict.champion_version} on the same rows", verdict.fold_champion)]
    else:
        series = [ui.Series(f"v{version} k-fold (held-out fold)", kfold),
                  ui.Series(f"v{version} on rows the champion never saw", verdict.fold_candidate),
                  ui.Series(f"champion v{verdict.champion_version} on the same rows", verdict.fold_champion)]
    return ui.line_chart(labels, series, primary, "fold") + _evidence(config, cycle_id)


def _search_history(config, cycle_id: str) -> str:
    """The cycle's hyperparameter search: each trial's objective (where a pruned one stood when it stopped), the best
    so far, and the trials' parameters."""
    from pipeline import catalog

    try:
        search = catalog.search(config, cycle_id)
    except catalog.NotRecorded:
        return ""
    heading = f"<h2>Search: {e(search.metric)} by trial</h2><p>{e(search.describe())}.</p>"
    if not search.trials:
        return heading
    trials = sorted(search.trials, key=lambda t: t.number)
    better = max if search.direction == "maximize" else min
    best_so_far, best = [], None
    for trial in trials:
        if trial.state == "complete" and trial.value is not None:
            best = trial.value if best is None else better(best, trial.value)
        best_so_far.append(best)
    chart = ui.line_chart(
        [f"#{t.number}" for t in trials],
        # The best so far first, so the trials' points are drawn over its line.
        [ui.Series("best so far", best_so_far),
         ui.Series("finished: k-fold mean", [t.value if t.state == "complete" else None for t in trials], joined=False),
         ui.Series("pruned: mean over the folds it ran", [t.value if t.state == "pruned" else None for t in trials],
                   joined=False)],
        f"{search.metric} on the selection rows", "trial")
    names = sorted({name for t in trials for name in t.params})
    rows = [[str(t.number) + (" ★" if t.number == search.best_number else ""), e(t.state), str(len(t.fold_values)),
             ui.metric(t.value), *[e(_param(t.params.get(name))) for name in names], e(t.role or "")] for t in trials]
    table = ui.table(["trial", "state", "folds", search.metric, *names, "warm start"], rows)
    return heading + chart + "<details><summary>Trials</summary>" + table + "</details>"


def _param(value) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _evidence(config, cycle_id: str) -> str:
    """Both models on the rows the champion never saw: metrics, class errors or residuals, calibration, over time."""
    from pipeline import catalog
    from pipeline.summary import format_significant

    try:
        evidence = catalog.evidence(config, cycle_id)
    except catalog.NotRecorded:
        return ""
    champion = f"champion v{evidence.champion_version}"
    models = (("candidate", evidence.candidate), (champion, evidence.champion))
    parts = [f"<h4>Candidate and {e(champion)} on the same {evidence.rows:,} unseen rows</h4>",
             ui.table(["metric", ui.Column("candidate", True), ui.Column(champion, True)],
                      [[e(name), ui.metric(value), ui.metric(evidence.champion.metrics.get(name))]
                       for name, value in evidence.candidate.metrics.items()])]
    deciles = [f"{10 * (i + 1)}%" for i in range(len(evidence.candidate.bins))]
    if evidence.candidate.confusion and evidence.champion.confusion:
        rows = [[e(label), *(f"{count:,}" for row in model.confusion or [] for count in row)] for label, model in models]
        parts += [f"<p>At the class threshold {evidence.threshold:g}; {ui.percent(evidence.class_flips)} of the rows "
                  "change class from the champion to the candidate.</p>",
                  ui.table(["model", ui.Column("true negatives", True), ui.Column("false positives", True),
                            ui.Column("false negatives", True), ui.Column("true positives", True)], rows),
                  ui.line_chart(deciles, [ui.Series(label, [b.observed - b.predicted for b in model.bins])
                                          for label, model in models],
                                "observed − predicted positive rate", "tenth of the rows, by the model's own score",
                                threshold=0.0, threshold_label="perfectly calibrated")]
    else:
        parts.append(ui.line_chart(deciles, [ui.Series(label, [b.observed for b in model.bins]) for label, model in models],
                                   "mean residual (truth − prediction)", "tenth of the rows, by the model's prediction",
                                   threshold=0.0, threshold_label="no bias"))
    if evidence.importance is not None:
        shown = evidence.importance
        parts += [f"<h4>Feature importance: the largest changes</h4><p>{e(shown.method)}, on {shown.rows:,} of these "
                  "rows, each scored by the model that never trained on it.</p>",
                  ui.table(["feature", ui.Column("candidate", True), ui.Column(champion, True), ui.Column("change", True),
                            ui.Column("rank candidate / champion", True)],
                           [[e(f.feature), ui.metric(f.candidate), ui.metric(f.champion),
                             e(format_significant(f.candidate - f.champion, signed=True)),
                             f"{shown.rank(f.feature, 'candidate')} / {shown.rank(f.feature, 'champion')}"]
                            for f in shown.top_changes()])]
    buckets = [b.start[:16] for b in evidence.buckets]
    parts.append(ui.line_chart(buckets, [ui.Series(label, model.by_time) for label, model in models],
                               evidence.primary_metric, "time bucket of the compared rows (its first row)"))
    parts.append(f"<p>The two models' predictions differ by a Wasserstein distance of "
                 f"{evidence.prediction_shift:.2f} standard deviations of the champion's.</p>")
    return "".join(parts)


def _earlier_versions(config, cycle_id: str) -> str:
    """The previous champion and the newest other versions beside the candidate, on rows neither trained on."""
    from pipeline import catalog

    try:
        earlier = catalog.earlier_versions(config, cycle_id)
    except catalog.NotRecorded:
        return ""
    if not earlier.versions:
        return ""
    rows = [[ui.link(f"{PREFIX}/models/{v.version}", f"v{v.version}"), e(v.role),
             "—" if v.note else f"{v.rows:,}", e(v.note) if v.note else ui.metric(v.version_value),
             "" if v.note else ui.metric(v.candidate_value)] for v in earlier.versions]
    return ("<h4>Earlier versions beside the candidate, on the compared rows neither trained on</h4>"
            + ui.table(["version", "role", ui.Column("rows", True), ui.Column(f"its {earlier.primary_metric}", True),
                        ui.Column("candidate", True)], rows))


VERSION_STATES = ("champion", "pending approval", "previous champion", "rejected", "superseded", "former champion",
                  "never promoted")


def version_state_label(aliases: list[str], tags, cycle) -> tuple[str, str]:
    """What a version is now (label, badge tone): its alias, else what happened to it."""
    for alias in ("champion", "challenger", "previous-champion"):
        if alias in aliases:
            return ALIAS_STATES[alias]
    if tags.approval == "rejected":
        return "rejected", "warn"
    if cycle is not None and cycle.status == "superseded":
        return "superseded", "muted"
    if tags.approval == "approved":
        return "former champion", "muted"
    return "never promoted", "muted"


def version_state(aliases: list[str], tags, cycle) -> str:
    return ui.badge(*version_state_label(aliases, tags, cycle))


@app.get("/models", response_class=HTMLResponse)
def models_page(status: str = "", q: str = "", page: int = 1) -> HTMLResponse:
    from pipeline import catalog, promote, registry
    from pipeline.record import VersionTags

    config = _config()
    aliases = registry.aliases(config)  # a version search does not return aliases
    versions = [(v, VersionTags.of(v)) for v in reversed(registry.list_versions(config))]
    lineage_of = catalog.cycle_summaries(config, [tags.cycle_id for _, tags in versions if tags.cycle_id])
    search = q.strip().lower().removeprefix("v")
    listed = []
    for v, tags in versions:
        cycle = lineage_of.get(tags.cycle_id or "")
        state = version_state_label([a for a, version in aliases.items() if version == v.version], tags, cycle)
        if (not status or state[0] == status) and (not search or search == v.version or search in (tags.cycle_id or "")):
            listed.append((v, tags, cycle, state))
    pages = max(1, -(-len(listed) // PAGE_SIZE))
    number = min(max(page, 1), pages)
    rows = []
    for v, tags, cycle, state in listed[(number - 1) * PAGE_SIZE: number * PAGE_SIZE]:
        improvement = ui.percent(tags.improvement, signed=True) if tags.improvement is not None else "—"
        rows.append([ui.link(f"{PREFIX}/models/{v.version}", f"v{v.version}"), ui.badge(*state),
                     e(tags.primary_metric or ""), ui.metric(tags.candidate_mean),
                     e(f"v{tags.compared_champion}" if tags.compared_champion else "—"), improvement,
                     ui.p_value(tags.p_value), _window(tags.window), f"<code>{e((tags.window_sha256 or '')[:12])}</code>",
                     e(tags.device or ""), lineage(config, cycle, v.run_id) or e(tags.cycle_id or "")])
    query = {"status": status, "q": q}
    controls = ui.filter_form(f"{PREFIX}/models", query, {"status": [(s, s) for s in VERSION_STATES]}, dates=False,
                              placeholder="version or cycle id")
    pager = ui.pager(f"{PREFIX}/models", query, number, pages, len(listed), "version")
    champion = aliases.get("champion")
    live = ""
    if champion:
        checks = sorted(catalog.quality_trend(config, champion, limit=50), key=lambda c: (c.as_of, c.started))
        checks = [c for c in checks if c.live_value is not None]
        labels = [_cycle_label(c) for c in checks]
        metric_name = VersionTags.of(registry.get_version(config, champion)).primary_metric or "metric"
        live = (f"<h2>Champion v{e(champion)}: live quality against its k-fold estimate</h2>"
                + ui.line_chart(labels, [ui.Series(f"live {metric_name} on new labelled rows", [c.live_value for c in checks]),
                                         ui.Series("k-fold estimate at training", [c.kfold_value for c in checks])],
                                metric_name, "cycle that checked it (as of, kind)"))
    history = [[f"#{h.seq}", e(f"{h.at:%Y-%m-%d %H:%M}"), e(h.actor), e(h.event()), e(h.reason or "")]
               for h in promote.history(config)]
    columns = ["version", "status", "metric", ui.Column("k-fold mean", True), "compared with",
               ui.Column("error reduction", True), ui.Column("p", True), "training window", "sha256", "device", "lineage"]
    body = (controls + pager + ui.table(columns, rows, empty="No version matches.") + live
            + "<h2>Alias history</h2>" + ui.table(["#", "when", "who", "event", "why"], history, empty="No alias moved yet."))
    return _page("Models", body, "models", f"Versions of {e(config.model_name)}, newest first; each version's page "
                 "holds its evidence")


@app.get("/models/{version}", response_class=HTMLResponse)
def version_page(version: str) -> HTMLResponse:
    from pipeline import catalog, registry
    from pipeline.errors import PipelineError
    from pipeline.record import VersionTags

    config = _config()
    try:
        info = registry.get_version(config, version) if version.isdigit() else None
    except PipelineError:
        info = None
    if info is None:
        raise HTTPException(404, "no such version")
    tags = VersionTags.of(info)
    aliases = registry.aliases(config)
    cycle = catalog.cycle_summaries(config, [tags.cycle_id]).get(tags.cycle_id) if tags.cycle_id else None
    state = version_state([a for a, held in aliases.items() if held == version], tags, cycle)
    facts = [["status", state], ["trained on", f"{_window(tags.window)} ({tags.window_rows or 0:,} rows, sha256 "
                                               f"<code>{e((tags.window_sha256 or '')[:12])}</code>)"],
             ["family, device", e(f"{tags.family or '—'}, {tags.device or '—'}")],
             ["parameters", e(", ".join(f"{k}={_param(v)}" for k, v in sorted((tags.params or {}).items())) or "—")],
             ["k-fold mean", f"{e(tags.primary_metric or '')} {ui.metric(tags.candidate_mean)}"],
             ["gate", e(f"compared with champion v{tags.compared_champion}") if tags.compared_champion
              else "no champion to compare with: the floors alone decided"],
             ["decided", e(f"{tags.approval} by {tags.decided_by}") if tags.approval else "not yet"],
             ["lineage", lineage(config, cycle, info.run_id) or e(tags.cycle_id or "")]]
    lead = ui.link(PREFIX + "/models", "← all versions")
    body = (ui.table(["", ""], facts, head=False) + f"<h2>v{e(version)}: {e(tags.primary_metric or 'metric')} per fold</h2>"
            + _fold_chart(config, version, tags.cycle_id or "") + _search_history(config, tags.cycle_id or "")
            + _earlier_versions(config, tags.cycle_id or ""))
    return _page(f"{config.model_name} v{version}", body, "models", lead)


@app.get("/approvals", response_class=HTMLResponse)
def approvals_page() -> HTMLResponse:
    from pipeline import catalog, registry
    from pipeline.record import VersionTags

    config = _config()
    by_cycle = {VersionTags.of(v).cycle_id: v.version for v in registry.list_versions(config)}
    rows = []
    for c in catalog.pending_approvals(config):
        if c.airflow_run_id:
            decide = airflow_run_link(c.airflow_dag_id, c.airflow_run_id, "/tasks/review/required_actions",
                                      "Required Actions")
        else:
            decide = "<code>pipeline promote</code> or <code>pipeline reject</code>"
        version = by_cycle.get(c.cycle_id)
        evidence = ui.link(f"{PREFIX}/models/{version}", f"v{version}") if version else "—"
        rows.append([str(c.as_of), evidence, e(c.primary_metric or ""), ui.metric(c.candidate_mean),
                     ui.metric(c.candidate_compare), ui.metric(c.champion_compare),
                     ui.percent(c.improvement, signed=True), ui.p_value(c.gate_p_value), e(c.trigger), decide])
    columns = ["as of", "version", "metric", ui.Column("k-fold mean", True), ui.Column("candidate, unseen rows", True),
               ui.Column("champion, same rows", True), ui.Column("error reduction", True), ui.Column("p", True),
               "trigger", "decide"]
    return _page("Pending approvals", ui.table(columns, rows, empty="Nothing waits for a decision."), "approvals",
                 "Candidates that passed the gate and wait for a person")


@app.get("/reports/{cycle_id}/{name}")
def report(cycle_id: str, name: str) -> FileResponse:
    from pipeline import catalog

    try:
        path = catalog.report_file(_config(), cycle_id, name)
    except catalog.NotRecorded:
        raise HTTPException(404, "no such report") from None
    return FileResponse(path, media_type="text/html", headers={
        "Content-Security-Policy": REPORT_POLICY, "X-Content-Type-Options": "nosniff"})


class PipelineReviewPlugin(AirflowPlugin):
    name = "pipeline_review"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "Pipeline review"}]
    # No `url_route`: Airflow would frame the pages in a sandbox that blocks every link out of them (to
    # Required Actions, a DAG run, MLflow). Each entry opens its page in a tab of its own instead.
    external_views = [
        {"name": label, "href": f"{PREFIX}/{page}", "destination": "nav", "category": "browse"} for page, label in ui.PAGES
    ]
