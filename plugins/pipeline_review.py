"""The review UI inside Airflow: a FastAPI app mounted at /pipeline by an Airflow plugin.

It renders what the pipeline recorded (through ``pipeline.catalog``); it decides
nothing. Every route needs an authenticated Airflow user (Airflow does not protect
plugin apps by itself), the API docs are off, pages carry no scripts, and Evidently's
reports — which quote column and category names from the data — are served with a
sandboxing Content-Security-Policy, so nothing in them runs in Airflow's origin.
"""

from __future__ import annotations

import html
import os

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

PREFIX = "/pipeline"
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; base-uri 'none'; form-action 'none'"
# A sandbox without allow-same-origin: the report's scripts (Evidently draws with them) run in an opaque origin.
REPORT_POLICY = "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; font-src data:"

app = FastAPI(
    title="Pipeline review", docs_url=None, redoc_url=None, openapi_url=None,
    dependencies=[Depends(requires_authenticated())],
)


def _config():
    """The config the DAGs use ($PIPELINE_CONFIG, default the demo's), read per request: it may change."""
    from pipeline.cli import DEMO_CONFIG
    from pipeline.config import load_config

    return load_config(os.environ.get("PIPELINE_CONFIG") or DEMO_CONFIG)


def _page(title: str, body: str) -> HTMLResponse:
    e = html.escape
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #e2e8f0;padding:.3rem .6rem;text-align:left}}nav a{{margin-right:1rem}}</style>
</head><body><nav><a href="{PREFIX}/drift">Drift</a></nav><h1>{e(title)}</h1>{body}</body></html>"""
    return HTMLResponse(document, headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})


@app.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/drift")


@app.get("/drift", response_class=HTMLResponse)
def drift_page() -> HTMLResponse:
    from pipeline import catalog

    e = html.escape
    rows = []
    for cycle in catalog.cycles(_config()):
        share = "" if cycle.drift_share is None else f"{cycle.drift_share:.0%}"
        verdict = {True: "drift", False: "no drift", None: "—"}[cycle.dataset_drift]
        report = f'<a href="{PREFIX}/drift/{e(cycle.cycle_id)}">report</a>' if cycle.dataset_drift is not None else ""
        rows.append(
            f"<tr><td>{cycle.as_of}</td><td>{e(cycle.kind)}</td><td>{e(cycle.trigger)}</td><td>{share}</td>"
            f"<td>{verdict}</td><td>{e(', '.join(cycle.drifted_features[:5]))}</td><td>{report}</td></tr>"
        )
    table = ("<table><tr><th>as of</th><th>kind</th><th>trigger</th><th>drifted share</th><th>dataset</th>"
             "<th>top drifted features</th><th></th></tr>" + "".join(rows) + "</table>")
    return _page("Drift", table if rows else "<p>No cycles recorded yet.</p>")


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
    external_views = [
        {"name": "Drift", "href": f"{PREFIX}/drift", "destination": "nav", "category": "browse", "url_route": "pipeline-drift"},
    ]
