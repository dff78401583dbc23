"""The review UI inside Airflow: a FastAPI app mounted at /pipeline by an Airflow plugin.

It renders what the pipeline recorded (through ``pipeline.catalog``); it decides
nothing. Every route needs an authenticated Airflow user (Airflow does not protect
plugin apps by itself), the API docs are off, pages carry no scripts, and Evidently's
reports — which quote column and category names from the data — are served with a
sandboxing Content-Security-Policy, so nothing in them runs in Airflow's origin.
"""

from __future__ import annotations

import html
import urllib.parse

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

PREFIX = "/pipeline"
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; base-uri 'none'; "
               "form-action 'none'")
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


PAGES = (("drift", "Drift"), ("validation", "Validation"), ("models", "Models"), ("approvals", "Pending approvals"))
NAV = "".join(f'<a href="{PREFIX}/{page}">{label}</a>' for page, label in PAGES)
COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#2c7a7b", "#97266d")


def line_plot(series: dict[str, list[tuple[str, float]]], threshold: float | None = None, width: int = 720,
              height: int = 220) -> str:
    """An inline SVG line plot (no scripts, no external assets): one line per series over shared x labels."""
    e = html.escape
    labels = sorted({x for points in series.values() for x, _ in points})
    values = [y for points in series.values() for _, y in points] + ([threshold] if threshold is not None else [])
    if not labels or not values:
        return "<p>Nothing recorded yet.</p>"
    low, high = min(0.0, min(values)), max(values) or 1.0
    # The side margin leaves room for a centred x label at each end ("2026-05-28 monitor").
    pad, side = 40, 70
    step = (width - 2 * side) / max(len(labels) - 1, 1)

    def xy(label: str, value: float) -> tuple[float, float]:
        return side + labels.index(label) * step, height - pad - (value - low) / ((high - low) or 1) * (height - 2 * pad)

    def point(label: str, value: float) -> str:
        x, y = xy(label, value)
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="4" y="{pad}" font-size="11">{high:.3g}</text>'
             f'<text x="4" y="{height - pad}" font-size="11">{low:.3g}</text>']
    if threshold is not None:
        parts.append(f'<polyline points="{point(labels[0], threshold)} {point(labels[-1], threshold)}" stroke="#a0aec0" '
                     'stroke-dasharray="4" fill="none"/>')
    for i, (name, points) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        line = " ".join(point(x, y) for x, y in points)
        parts.append(f'<polyline points="{line}" stroke="{color}" fill="none" stroke-width="2"/>')
        for label, value in points:
            cx, cy = xy(label, value)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}">'
                         f'<title>{e(name)} {e(label)}: {value:.4g}</title></circle>')
        parts.append(f'<text x="{width - 150}" y="{14 + 14 * i}" font-size="11" fill="{color}">{e(name)}</text>')
    parts += [f'<text x="{side + i * step:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{e(label)}</text>'
              for i, label in enumerate(labels) if len(labels) < 12 or i % (len(labels) // 8 + 1) == 0]
    return "".join(parts) + "</svg>"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> HTMLResponse:
    e = html.escape
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #e2e8f0;padding:.3rem .6rem;text-align:left}}nav a{{margin-right:1rem}}</style>
</head><body><nav>{NAV}</nav><h1>{e(title)}</h1>{body}</body></html>"""
    return HTMLResponse(document, headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})


@app.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/drift")


@app.get("/drift", response_class=HTMLResponse)
def drift_page() -> HTMLResponse:
    from pipeline import catalog

    e = html.escape
    rows = []
    recorded = catalog.cycles(_config())
    for cycle in recorded:
        share = "" if cycle.drift_share is None else f"{cycle.drift_share:.0%}"
        verdict = {True: "drift", False: "no drift", None: "—"}[cycle.dataset_drift]
        report = f'<a href="{PREFIX}/drift/{e(cycle.cycle_id)}">report</a>' if cycle.dataset_drift is not None else ""
        rows.append(
            f"<tr><td>{cycle.as_of}</td><td>{e(cycle.kind)}</td><td>{e(cycle.trigger)}</td><td>{share}</td>"
            f"<td>{verdict}</td><td>{e(', '.join(cycle.drifted_features[:5]))}</td><td>{report}</td></tr>"
        )
    listing = ("<table><tr><th>as of</th><th>kind</th><th>trigger</th><th>drifted share</th><th>dataset</th>"
               "<th>top drifted features</th><th></th></tr>" + "".join(rows) + "</table>")
    history = catalog.drift_history(recorded)
    plots = "".join(
        f"<h3>{e(feature)}</h3>" + line_plot({feature: [(f"{c.as_of} {c.kind}", score) for c, score in points]})
        for feature, points in history.items()
    )
    listed = listing if rows else "<p>No cycles recorded yet.</p>"
    return _page("Drift", listed + "<h2>Drift score per feature across cycles</h2>" + plots)


@app.get("/drift/{cycle_id}", response_class=HTMLResponse)
def drift_report_page(cycle_id: str) -> HTMLResponse:
    from pipeline import catalog

    try:
        catalog.report_file(_config(), cycle_id, "drift.html")
    except catalog.NotRecorded:
        raise HTTPException(404, "no such drift report") from None
    e = html.escape
    frame = (f'<iframe sandbox="allow-scripts" src="{PREFIX}/reports/{e(cycle_id)}/drift.html" '
             'style="width:100%;height:80vh;border:1px solid #e2e8f0"></iframe>')
    return _page(f"Drift report of {cycle_id}", frame)


@app.get("/validation", response_class=HTMLResponse)
def validation_page() -> HTMLResponse:
    from pipeline import catalog

    e = html.escape
    rows = [[str(c.as_of), e(c.kind), e(c.validation or "—"),
             f'<a href="{PREFIX}/validation/{e(c.cycle_id)}">{e(c.cycle_id)}</a>']
            for c in catalog.cycles(_config()) if c.validation]
    return _page("Validation", table(["as of", "kind", "verdict", "cycle"], rows) if rows else "<p>No cycles recorded yet.</p>")


@app.get("/validation/{cycle_id}", response_class=HTMLResponse)
def validation_detail(cycle_id: str) -> HTMLResponse:
    from pipeline import catalog

    e = html.escape
    try:
        result, kept = catalog.validation(_config(), cycle_id)
    except catalog.NotRecorded:
        raise HTTPException(404, "no such validation") from None
    outcomes = sorted(result.outcomes, key=lambda o: (o.success, o.severity != "critical"))
    rows = [["passed" if o.success else f"<b>FAILED ({e(o.severity)})</b>", e(o.message),
             "" if o.unexpected_count is None else f"{o.unexpected_count:,}", e(", ".join(map(str, o.sample_values[:5])))]
            for o in outcomes]
    batch = f"<p>The failing batch is kept at <code>{e(str(kept))}</code>.</p>" if kept else ""
    head = f"<p>{e(result.summary().splitlines()[0])}</p>{batch}"
    report = f'<p><a href="{PREFIX}/reports/{e(cycle_id)}/validation.html">full report</a></p>'
    outcomes_table = table(["result", "expectation", "unexpected rows", "sample values"], rows)
    return _page(f"Validation of {cycle_id}", head + report + outcomes_table)


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


@app.get("/models", response_class=HTMLResponse)
def models_page() -> HTMLResponse:
    from pipeline import catalog, promote, registry
    from pipeline.record import VersionTags

    e = html.escape
    config = _config()
    versions = registry.list_versions(config)
    aliases = registry.aliases(config)  # a version search does not return aliases
    runs = {c.cycle_id: c for c in catalog.cycles(config, kinds=("retrain",))}
    rows, trend, folds = [], {}, ""
    for v in reversed(versions):
        tags = VersionTags.of(v)
        window = f"{tags.window_start or ''}..{tags.window_end or ''}"
        rows.append([f"v{e(v.version)}", e(", ".join(a for a, version in aliases.items() if version == v.version)),
                     e(tags.primary_metric or ""), _number(tags.candidate_mean), _number(tags.improvement),
                     _number(tags.p_value), e(window), f"<code>{e((tags.window_sha256 or '')[:12])}</code>",
                     e(tags.device or ""), lineage(config, runs.get(tags.cycle_id or ""), v.run_id) or e(tags.cycle_id or "")])
        if tags.candidate_mean is not None:
            trend.setdefault(tags.primary_metric or "metric", []).append((f"v{v.version}", tags.candidate_mean))
    for v in reversed(versions[-3:]):
        try:
            verdict = catalog.gate_verdict(config, VersionTags.of(v).cycle_id or "")
        except catalog.NotRecorded:
            continue
        series = {"candidate": [(f"fold {i}", x) for i, x in enumerate(verdict.fold_candidate, 1) if x is not None]}
        if verdict.champion_version:
            series[f"champion v{verdict.champion_version}"] = [
                (f"fold {i}", x) for i, x in enumerate(verdict.fold_champion, 1) if x is not None]
        folds += f"<h3>v{e(v.version)}: {e(verdict.primary_metric)} per fold</h3>" + line_plot(series)
    history = [[f"#{h.seq}", e(f"{h.at:%Y-%m-%d %H:%M}"), e(h.actor), e(h.action),
                f"v{e(h.from_version or '-')} → v{e(h.to_version or '-')}", e(h.reason or "")]
               for h in promote.history(config)]
    columns = ["version", "aliases", "metric", "k-fold mean", "improvement", "p", "window", "sha256", "device", "lineage"]
    body = (table(columns, rows)
            + "<h2>Metric across versions</h2>" + line_plot(trend) + "<h2>Gate: candidate vs champion</h2>" + folds
            + "<h2>Alias history</h2>" + table(["#", "when", "who", "what", "move", "why"], history))
    return _page("Models", body)


@app.get("/approvals", response_class=HTMLResponse)
def approvals_page() -> HTMLResponse:
    from pipeline import catalog

    e = html.escape
    rows = []
    for c in catalog.pending_approvals(_config()):
        if c.airflow_run_id:
            link = airflow_run_link(c.airflow_dag_id, c.airflow_run_id, "/tasks/review/required_actions", "Required Actions")
        else:
            link = "approve with <code>pipeline promote</code>"
        rows.append([str(c.as_of), e(c.cycle_id), e(c.trigger), link])
    waiting = table(["as of", "cycle", "trigger", "decide"], rows) if rows else "<p>Nothing waits for a decision.</p>"
    return _page("Pending approvals", waiting)


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
        {"name": label, "href": f"{PREFIX}/{page}", "destination": "nav", "category": "browse"} for page, label in PAGES
    ]
