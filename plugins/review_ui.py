"""The review pages' look: one layout, tables, status labels, rounded numbers and inline SVG charts.

Presentation only (what to show comes from ``pipeline_review``): no scripts, no external assets, so every
page renders under the pages' Content-Security-Policy and offline. Every text from a record is escaped here.
"""

from __future__ import annotations

import html
import math
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIX = "/pipeline"
PAGES = (("drift", "Drift"), ("validation", "Validation"), ("models", "Models"), ("approvals", "Pending approvals"))
SERIES_COLORS = ("#017cee", "#e8833a", "#00ad46", "#c73e3e", "#8e44ad", "#b7791f", "#11a3a3", "#d53f8c")

# A cycle's status as a reviewer reads it, and the badge colour class it gets.
STATUS_LABELS = {
    "running": ("running", "info"), "paused": ("paused", "muted"),
    "validation_stopped": ("stopped by validation", "bad"), "no_drift": ("no drift", "muted"),
    "drift_detected": ("drift detected", "warn"), "degraded": ("degraded", "bad"),
    "not_degraded": ("not degraded", "muted"), "gate_rejected": ("rejected by the gate", "warn"),
    "awaiting_approval": ("pending approval", "info"), "promoted": ("promoted", "good"),
    "rejected": ("rejected by a reviewer", "warn"), "superseded": ("superseded", "muted"), "failed": ("failed", "bad"),
}

e = html.escape

# Airflow's pinwheel, drawn small: four blades in its colours.
LOGO = ('<svg class="logo" viewBox="0 0 32 32" width="22" height="22" aria-hidden="true">'
        '<path d="M16 16 L16 2 C22 2 26 8 16 16Z" fill="#017cee"/><path d="M16 16 L30 16 C30 22 24 26 16 16Z" fill="#00ad46"/>'
        '<path d="M16 16 L16 30 C10 30 6 24 16 16Z" fill="#04d659"/><path d="M16 16 L2 16 C2 10 8 6 16 16Z" fill="#00c7d4"/>'
        '</svg>')

STYLE = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1a202c;--muted:#5a6577;--line:#e2e8f0;--head:#f7fafc;--bar:#f0f4f8;
--link:#0161b6;--good:#1e7b45;--good-bg:#e3f6ea;--warn:#8a5300;--warn-bg:#fdf0d9;--bad:#a12b2b;--bad-bg:#fbe4e4;
--info:#0b5cad;--info-bg:#e1eefb;--muted-bg:#edf0f4;--grid:#e2e8f0;--axis:#8893a4}
@media (prefers-color-scheme:dark){:root{--bg:#14181f;--fg:#e6e9ef;--muted:#a0a9b8;--line:#2c3340;--head:#1b212b;
--bar:#1b212b;--link:#6cb6ff;--good:#7fd6a0;--good-bg:#173424;--warn:#f3c173;--warn-bg:#3a2c12;--bad:#ff9b9b;
--bad-bg:#3d1b1b;--info:#8cc4ff;--info-bg:#16304d;--muted-bg:#262d38;--grid:#2c3340;--axis:#6f7a8c}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
header{display:flex;align-items:center;gap:1.5rem;padding:.55rem 1.5rem;background:var(--bar);border-bottom:1px solid var(--line)}
header .brand{display:flex;align-items:center;gap:.45rem;font-weight:600;color:var(--fg)}
header nav{display:flex;gap:.25rem;flex-wrap:wrap}
header nav a{padding:.3rem .7rem;border-radius:6px;color:var(--fg)}
header nav a[aria-current=page]{background:var(--bg);box-shadow:0 0 0 1px var(--line);font-weight:600}
main{padding:1rem 1.5rem 3rem;max-width:1400px}
h1{font-size:1.5rem;margin:.6rem 0 .2rem}h2{font-size:1.2rem;margin:1.8rem 0 .5rem}h3{font-size:1.02rem;margin:1.2rem 0 .3rem}
p.lead{color:var(--muted);margin:.1rem 0 1rem}
table{border-collapse:collapse;font-size:.92rem;margin:.4rem 0}
th,td{padding:.38rem .7rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600;white-space:nowrap}td:first-child{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:hover{background:var(--head)}
code{font-size:.85em}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;white-space:nowrap}
.good{color:var(--good);background:var(--good-bg)}.warn{color:var(--warn);background:var(--warn-bg)}
.bad{color:var(--bad);background:var(--bad-bg)}.info{color:var(--info);background:var(--info-bg)}
.muted{color:var(--muted);background:var(--muted-bg)}
svg.chart text{fill:var(--fg);font-size:11px}svg.chart .axis{stroke:var(--axis)}svg.chart .grid{stroke:var(--grid)}
svg.chart .title{font-size:12px;fill:var(--muted)}svg.chart .threshold{stroke:var(--bad);stroke-dasharray:5 4}
.legend{display:flex;gap:1rem;flex-wrap:wrap;font-size:.85rem;color:var(--muted)}
.legend span::before{content:"";display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;
background:var(--c);vertical-align:-.1rem}
form.filters{display:flex;gap:.6rem;flex-wrap:wrap;align-items:end;margin:.6rem 0}
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted)}
form.filters input,form.filters select,form.filters button{font:inherit;padding:.25rem .4rem;border:1px solid var(--line);
border-radius:6px;background:var(--bg);color:var(--fg)}
.pager{display:flex;gap:1rem;align-items:center;margin:.6rem 0;color:var(--muted)}
details{margin:.3rem 0}summary{cursor:pointer}
.report{width:100%;height:calc(100vh - 9.5rem);border:1px solid var(--line);border-radius:6px;background:#fff}
"""


def page(title: str, body: str, active: str | None = None, lead: str = "") -> str:
    """A whole document: Airflow's name and a way back to it, the four pages' nav bar, the title, the body."""
    nav = "".join(f'<a href="{PREFIX}/{name}"{" aria-current=page" if name == active else ""}>{e(label)}</a>'
                  for name, label in PAGES)
    intro = f'<p class="lead">{lead}</p>' if lead else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{e(title)} · Pipeline review</title>'
            f"<style>{STYLE}</style></head><body><header>"
            f'<a class="brand" href="/" title="Back to Airflow">{LOGO}Airflow</a><nav>{nav}</nav></header>'
            f"<main><h1>{e(title)}</h1>{intro}{body}</main></body></html>")


@dataclass(frozen=True)
class Column:
    title: str
    numeric: bool = False


def table(columns: Sequence[Column | str], rows: Iterable[Sequence[str]], empty: str = "Nothing recorded yet.",
          head: bool = True) -> str:
    """Cells are HTML already (escaped by the caller); numeric columns are right-aligned in tabular figures.
    ``head=False``: a table of facts, each row naming its own."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    body = "".join("<tr>" + "".join(f'<td{" class=num" if c.numeric else ""}>{cell}</td>'
                                    for c, cell in zip(cols, row, strict=True)) + "</tr>" for row in rows)
    if not body:
        return f"<p>{e(empty)}</p>"
    titles = "".join(f'<th{" class=num" if c.numeric else ""}>{e(c.title)}</th>' for c in cols)
    return f"<table>{f'<thead><tr>{titles}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def status_badge(status: str | None) -> str:
    label, tone = STATUS_LABELS.get(status or "", (status or "—", "muted"))
    return f'<span class="badge {tone}">{e(label)}</span>'


def badge(text: str, tone: str) -> str:
    return f'<span class="badge {tone}">{e(text)}</span>'


# ---------------------------------------------------------------------------- numbers


def metric(value: float | None, digits: int = 4) -> str:
    """A metric's value to the digits that tell models apart (AUC 0.8047, RMSE 48.42)."""
    from pipeline.summary import format_significant

    return "—" if value is None or not math.isfinite(value) else format_significant(value, digits)


def p_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def percent(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


# ---------------------------------------------------------------------------- links and forms


def link(href: str, text: str) -> str:
    return f'<a href="{e(href)}">{e(text)}</a>'


def query_link(path: str, query: dict[str, str], text: str) -> str:
    clean = {k: v for k, v in query.items() if v}
    return link(f"{path}?{urllib.parse.urlencode(clean)}" if clean else path, text)


def filter_form(path: str, query: dict[str, str], selects: dict[str, Sequence[tuple[str, str]]], dates: bool = True,
                placeholder: str = "cycle id, trigger or feature") -> str:
    """The list's filters as a GET form: a select per ``selects`` entry (name -> (value, label)), as-of dates, a search."""
    fields = []
    for name, options in selects.items():
        choices = "".join(f'<option value="{e(value)}"{" selected" if query.get(name) == value else ""}>{e(label)}</option>'
                          for value, label in [("", "any"), *options])
        fields.append(f'<label>{e(name)}<select name="{e(name)}">{choices}</select></label>')
    for name, label in (("since", "as of from"), ("until", "as of to")) if dates else ():
        fields.append(f'<label>{label}<input type="date" name="{name}" value="{e(query.get(name, ""))}"></label>')
    fields.append(f'<label>search<input type="search" name="q" value="{e(query.get("q", ""))}" '
                  f'placeholder="{e(placeholder)}"></label>')
    return f'<form class="filters" method="get" action="{e(path)}">{"".join(fields)}<button>Filter</button></form>'


def pager(path: str, query: dict[str, str], number: int, pages: int, total: int, what: str) -> str:
    """"page 2 of 41 (2,004 cycles)" (``what``: "cycle") between links to the newer and the older page, the filters kept."""
    newer = query_link(path, {**query, "page": str(number - 1)}, "← newer") if number > 1 else ""
    older = query_link(path, {**query, "page": str(number + 1)}, "older →") if number < pages else ""
    return (f'<nav class="pager">{newer}<span>page {number} of {pages} ({total:,} {e(what)}{"s" * (total != 1)})</span>'
            f"{older}</nav>")


# ---------------------------------------------------------------------------- charts


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    return [round(first + i * step, 12) for i in range(int(math.ceil((high - first) / step)) + 1)]


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x position; None: nothing measured there
    joined: bool = True  # a line through its points; False: points only (values that do not follow on each other)


def line_chart(x_labels: Sequence[str], series: Sequence[Series], y_title: str, x_title: str,
               threshold: float | None = None, threshold_label: str = "threshold", width: int = 760,
               height: int = 240) -> str:
    """Lines over one x position per label (two cycles of one day stay apart), titled axes, round ticks, a legend
    and, when given, a dashed threshold line. The y range fits the data (and the threshold), not zero."""
    points = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    if not x_labels or not points:
        return "<p>Nothing recorded yet.</p>"
    span = points + ([threshold] if threshold is not None else [])
    low, high = min(span), max(span)
    margin = (high - low) * 0.08 or abs(high) * 0.05 or 0.05
    # Distances and counts never go below zero: neither does their axis.
    ticks = nice_ticks(max(low - margin, 0.0) if low >= 0 else low - margin, high + margin)
    low, high = ticks[0], ticks[-1]
    left, right, top, bottom = 56, 24, 30, 50
    inner_w, inner_h = width - left - right, height - top - bottom
    step = inner_w / max(len(x_labels) - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if len(x_labels) > 1 else inner_w / 2)

    def y(value: float) -> float:
        return top + inner_h - (value - low) / (high - low) * inner_h

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{e(y_title)} by {e(x_title)}">']
    tick_step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for tick in ticks:
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_tick_text(tick, tick_step)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + inner_h}"/>'
                 f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + inner_h}" y2="{top + inner_h}"/>')
    # As many labels as fit side by side (about 6.5 px a character); the others are in each point's tooltip.
    every = max(1, math.ceil(max(len(label) for label in x_labels) * 6.5 / max(step, 1.0)))
    last = len(x_labels) - 1
    for i, label in enumerate(x_labels):
        if i % every == 0:
            # The end labels align with the plot's edges instead of running past them.
            anchor = "start" if i == 0 and last else "end" if i == last and last else "middle"
            parts.append(f'<text x="{x(i):.1f}" y="{top + inner_h + 16}" text-anchor="{anchor}">{e(label)}</text>')
    parts.append(f'<text class="title" x="{left + inner_w / 2:.1f}" y="{height - 12}" text-anchor="middle">{e(x_title)}</text>'
                 f'<text class="title" x="{left}" y="{top - 12}">{e(y_title)}</text>')
    if threshold is not None:
        parts.append(f'<line class="threshold" x1="{left}" x2="{width - right}" y1="{y(threshold):.1f}" '
                     f'y2="{y(threshold):.1f}"><title>{e(threshold_label)} {threshold:.4g}</title></line>')
    for index, item in enumerate(series):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(item.values):
            if value is None or not math.isfinite(value):
                runs.append([])
                continue
            runs[-1].append(f"{x(i):.1f},{y(value):.1f}")
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="3.5" fill="{color}">'
                         f"<title>{e(item.name)} · {e(x_labels[i])}: {value:.4g}</title></circle>")
        parts += [f'<polyline points="{" ".join(run)}" stroke="{color}" stroke-width="2" fill="none"/>'
                  for run in runs if len(run) > 1 and item.joined]
    parts.append("</svg>")
    legend = [f'<span style="--c:{SERIES_COLORS[i % len(SERIES_COLORS)]}">{e(s.name)}</span>' for i, s in enumerate(series)]
    if threshold is not None:
        legend.append(f'<span style="--c:var(--bad)">{e(threshold_label)} (dashed)</span>')
    return "".join(parts) + f'<div class="legend">{"".join(legend)}</div>'


@dataclass(frozen=True)
class HeatCell:
    severity: float | None  # the score over its threshold: >= 1 is past the floor; None: not measured
    drifted: bool
    title: str  # the tooltip: feature, cycle, score, threshold, method


def heat_map(rows: Sequence[str], columns: Sequence[str], cells: dict[tuple[str, str], HeatCell],
             row_links: dict[str, str] | None = None) -> str:
    """A feature × cycle grid, one square per measurement, its colour the score relative to its threshold
    (white at 0, full at the threshold and beyond), drifted ones ringed: every cycle's drift at one glance."""
    if not rows or not columns:
        return "<p>Nothing recorded yet.</p>"
    size, label_w = 24, max(90, 8 * max(len(r) for r in rows))
    head_h = 16 + 5 * max(len(c) for c in columns)  # the column labels, rotated
    width, height = label_w + size * len(columns) + head_h, head_h + size * len(rows) + 8
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="drift per feature and cycle">']
    for j, column in enumerate(columns):
        cx = label_w + j * size + size / 2
        parts.append(f'<text transform="translate({cx + 4:.1f} {head_h - 6}) rotate(-50)">{e(column)}</text>')
    for i, row in enumerate(rows):
        cy = head_h + i * size
        label = e(row)
        if row_links and row in row_links:
            label = f'<a href="{e(row_links[row])}">{label}</a>'
        parts.append(f'<text x="{label_w - 8}" y="{cy + size / 2 + 4:.1f}" text-anchor="end">{label}</text>')
        for j, column in enumerate(columns):
            cell = cells.get((row, column))
            x = label_w + j * size
            if cell is None or cell.severity is None:
                parts.append(f'<rect x="{x + 1}" y="{cy + 1}" width="{size - 2}" height="{size - 2}" fill="none" '
                             f'class="grid"><title>{e(cell.title if cell else row + " · " + column + ": not measured")}'
                             "</title></rect>")
                continue
            shade = min(cell.severity, 1.0) if math.isfinite(cell.severity) else 1.0
            fill = f"rgba(199,62,62,{0.5 + 0.45 * shade:.2f})" if cell.drifted else f"rgba(1,124,238,{0.06 + 0.64 * shade:.2f})"
            ring = ' stroke="#7a1f1f" stroke-width="2"' if cell.drifted else ""
            parts.append(f'<rect x="{x + 1}" y="{cy + 1}" width="{size - 2}" height="{size - 2}" rx="3" fill="{fill}"'
                         f"{ring}><title>{e(cell.title)}</title></rect>")
    parts.append("</svg>")
    legend = ('<div class="legend"><span style="--c:rgba(1,124,238,.35)">below its threshold (darker: closer)</span>'
              '<span style="--c:rgba(199,62,62,.9)">drifted (past the threshold and significant)</span></div>')
    return "".join(parts) + legend
