"""The curation report: `report.json` (everything) and `report.html` (one self-contained page to read it)."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.io import atomic_write_text, write_json

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmforge curate — {{ r.recipe.name }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d2330}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #dde} table{border-collapse:collapse;width:100%}
td,th{padding:4px 8px;border-bottom:1px solid #eef;text-align:left;vertical-align:top} th{background:#f5f6fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums} code,pre{font:12px ui-monospace,monospace}
pre{white-space:pre-wrap;background:#f7f7f9;padding:6px;margin:2px 0;max-height:9em;overflow:auto}
.bar{height:10px;background:#4e79a7;display:inline-block} .bar.after{background:#f28e2b} .muted{color:#667}
</style></head><body>
<h1>Curation report: {{ r.recipe.name }}</h1>
<p>{{ "{:,}".format(r.records_before) }} records &rarr; <b>{{ "{:,}".format(r.records_after) }}</b>
({{ "%.1f"|format(100 * r.records_after / r.records_before) }}% kept).
<span class="muted">Parent <code>{{ r.dataset }}</code> ({{ r.parent_hash[:12] }}); curated dataset {{ r.content_hash[:12] }}.
{% if r.map %}Map <code>{{ r.map }}</code>.{% endif %}</span></p>
<h2>Steps</h2>
<table><tr><th>#</th><th>step</th><th>parameters</th><th class="num">removed</th><th class="num">remaining</th></tr>
{% for s in r.steps %}<tr><td>{{ loop.index }}</td><td><a href="#step{{ loop.index }}">{{ s.step }}</a></td>
<td><code>{{ s.params|tojson }}</code></td><td class="num">{{ "{:,}".format(s.removed) }}</td>
<td class="num">{{ "{:,}".format(s.remaining) }}</td></tr>{% endfor %}</table>
{% if r.topics %}<h2>Topic shares before and after</h2>
<table><tr><th>topic</th><th class="num">before</th><th class="num">after</th><th>share (blue before, orange after)</th></tr>
{% for t in r.topics %}<tr><td>{{ t.label }}</td><td class="num">{{ "{:,}".format(t.before) }}</td>
<td class="num">{{ "{:,}".format(t.after) }}</td><td>
<span class="bar" style="width:{{ (300 * t.share_before)|round(1) }}px"></span> {{ "%.1f"|format(100 * t.share_before) }}%<br>
<span class="bar after" style="width:{{ (300 * t.share_after)|round(1) }}px"></span> {{ "%.1f"|format(100 * t.share_after) }}%
</td></tr>{% endfor %}</table>{% endif %}
<h2>Examples of removed records</h2>
{% for s in r.steps %}<h3 id="step{{ loop.index }}">{{ loop.index }}. {{ s.step }} — {{ "{:,}".format(s.removed) }} removed</h3>
{% if not s.examples %}<p class="muted">none</p>{% endif %}
{% for e in s.examples %}<p><code>{{ e.id }}</code> <span class="muted">{{ e.source }} — {{ e.reason }}</span></p>
<pre>{{ e.excerpt }}</pre>{% endfor %}{% endfor %}
</body></html>
"""


def render_html(report: dict) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    # attribute access on plain dicts, so the template reads like the JSON
    return env.from_string(_TEMPLATE).render(r=json.loads(json.dumps(report)))


def write_report(directory: str | Path, report: dict) -> None:
    write_json(Path(directory) / "report.json", report)
    atomic_write_text(Path(directory) / "report.html", render_html(report))
