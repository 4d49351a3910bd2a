"""The report page, rendered from a context of plain data (never markup) into one self-contained HTML file.

Every value from the data (file names, class names, error messages) is escaped for the place it lands:
`_t` for text and double-quoted attributes, `_url` for src/href (relative paths only, percent-encoded),
`_json` for the one inline data script (all three from reports/escape.py). Styles and the script are inline;
nothing is fetched from the network.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from reports.escape import script_json as _json
from reports.run.browser import SCRIPT as BROWSER_SCRIPT
from reports.run.explorer import SCRIPT as EXPLORER_SCRIPT
from reports.escape import text as _t
from reports.escape import url as _url

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;color:#222}
h1{margin:16px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}h3{margin:20px 0 6px}
.banner{padding:10px 14px;margin:10px 0;border-radius:4px;font-weight:600}
.warn{background:#fde2e1;border:1px solid #e0a0a0}.info{background:#e6f0fb;border:1px solid #a8c4e8}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}img.fig{max-width:100%;display:block;margin:8px 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(136px,1fr));gap:6px}
.tile{font-size:11px;overflow-wrap:anywhere}
.cbar{display:inline-block;width:120px;height:10px;vertical-align:middle;border:1px solid #999}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:1}
.scroll{max-height:480px;overflow:auto}th.sortable{cursor:pointer}th.asc::after{content:" \\25B2"}
th.desc::after{content:" \\25BC"}#cb-table tr[data-row]:hover,#cb-table tr[data-row]:focus{background:#eef4fb}
.hist{width:240px}.bars{display:flex;align-items:flex-end;gap:1px;height:60px;border-bottom:1px solid #999}
.bar{flex:1;background:#4c72b0;min-height:0}.axis{font-size:10px;color:#555}.howto{color:#8a4b00}
.mapbox canvas{width:100%;max-width:900px;border:1px solid #ddd;cursor:crosshair}
.tip{position:absolute;background:#fff;border:1px solid #999;padding:4px;font-size:11px;max-width:220px;
overflow-wrap:anywhere;pointer-events:none;z-index:2}.tip img{width:96px;height:96px;display:block}
.key{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px}.lookup li{cursor:pointer;overflow-wrap:anywhere}
.view{width:160px;height:160px}.mistake{color:#b00}
.tile img,.tile .missing{width:128px;height:128px;display:block;background:#eee}
.tile .cam img{width:64px;height:64px}.cam{margin-top:2px;color:#555}
.chan{margin:10px 0 18px}.pair{display:flex;gap:24px;flex-wrap:wrap}pre{background:#f6f6f6;padding:10px;overflow:auto}
.muted{color:#777}nav a{margin-right:12px}
"""

_SCRIPT = """
(function(){
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var box = document.getElementById('filter');
  box.addEventListener('input', function(){
    var q = box.value.toLowerCase();
    document.querySelectorAll('.tile[data-i]').forEach(function(el){
      el.hidden = q !== '' && data.ids[+el.dataset.i].toLowerCase().indexOf(q) < 0;
    });
  });
})();
"""


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;" if value is None or math.isnan(value) else _t(f"{value}")
    return _t(format(value, fmt)) if isinstance(value, (int, float)) else _t(value)


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """head: texts; rows: cells already rendered by _t/_num."""
    out = ["<table><tr>", *(f"<th>{_t(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _figure(src: str, alt: str) -> str:
    return f'<img class="fig" src="{_url(src)}" alt="{_t(alt)}" loading="lazy">'


def _tile(tile: Mapping[str, Any]) -> str:
    caption = (f"{_t(tile['image_id'])}<br>value {_num(tile.get('value'))}"
               f"<br>label {_t(tile.get('label') or '-')}, pred {_t(tile.get('pred') or '-')}")
    pic = (f'<img src="{_url(tile["src"])}" alt="{_t(tile["image_id"])}" title="{_t(tile["image_id"])}" loading="lazy">'
           if tile.get("src") else f'<div class="missing" title="{_t(tile.get("why") or "")}"></div>')
    cams = "".join(f'<div class="cam"><img src="{_url(c["src"])}" alt="Grad-CAM {_t(c["class"])}" loading="lazy">'
                   f'Grad-CAM {_t(c["class"])}, '
                   + (f'0 to {_num(c["vmax"], ".3g")}' if c["vmax"] > 0 else "no positive evidence") + "</div>"
                   for c in tile.get("cams") or ())
    return f'<div class="tile" data-i="{int(tile["i"])}">{pic}{caption}{cams}</div>'


def _section_run(ctx: Mapping[str, Any]) -> str:
    rows = [(_t(k), _t(v)) for k, v in ctx["run"]]
    return "<h2 id='run'>The run</h2>" + _table(("", ""), rows)


def _section_quality(q: Mapping[str, Any]) -> str:
    out = ["<h2 id='quality'>Data quality</h2>", _figure(q["figure"], "images per class and errors by reason")]
    if q["errors"]:
        out.append(_table(("error", "images"), [(_t(r), _num(n, "d")) for r, n in q["errors"]]))
    if q["skipped"]:
        out.append("<p>Files found but not analyzed:</p>")
        out.append(_table(("reason", "files"), [(_t(r), _num(n, "d")) for r, n in q["skipped"]]))
    return "".join(out)


def _section_classification(c: Mapping[str, Any]) -> str:
    out = ["<h2 id='classification'>Classification</h2>", f"<p>{_t(c['summary'])}</p>"]
    out += [_figure(src, alt) for src, alt in c["figures"]]
    return "".join(out)


def _channel_rows(rows) -> list[tuple[str, ...]]:
    return [(_num(r["channel"], "d"), _num(r["auc"]), _num(r["d"], ".2f"), _num(r["mean"]), _num(r["rest_mean"]),
              _num(r["rank_mean"], "d"), _num(r["contrib"], ".3g"), _num(r["rank_contrib"], "d")) for r in rows]


def _section_channels(ctx: Mapping[str, Any]) -> str:
    out = ["<h2 id='channels'>Channels per class</h2>", f"<p>{_t(ctx['group_note'])}</p>",
           _figure(ctx["selectivity_figure"], "selectivity per layer")]
    head = ("channel", "AUC", "d", "mean, class", "mean, rest", "rank by mean", "contribution", "rank as driver")
    for layer in ctx["layers"]:
        out.append(f"<h3>{_t(layer['layer'])}</h3>")
        out += [_figure(src, alt) for src, alt in layer["figures"]]
        out.append('<div class="pair">')
        for cls in layer["classes"]:
            out.append(f"<div><b>{_t(cls['class'])}</b>: most selective" + _table(head,
                                                                                  _channel_rows(cls["selective"])))
            out.append("by mean activation (the article's ranking)" + _table(head, _channel_rows(cls["by_mean"])))
            if cls["drivers"]:
                out.append("drivers: largest mean contribution to the class logit (gradient x activation)"
                           + _table(head, _channel_rows(cls["drivers"])))
            out.append("</div>")
        out.append("</div>")
    return "".join(out)


def _section_galleries(ctx: Mapping[str, Any]) -> str:
    out = ["<h2 id='galleries'>Top-activating images</h2>",
           f"<p>{_t(ctx['gallery_note'])}</p>",
           '<p><label>Filter tiles by file name: <input id="filter" type="search"></label></p>']
    if ctx.get("overlay_note"):
        out.append(f'<div class="banner warn">{_t(ctx["overlay_note"])}</div>')
    for g in ctx["galleries"]:
        out.append(f"<h3>{_t(g['layer'])}: channels most selective for {_t(g['class'])}</h3>")
        for ch in g["channels"]:
            out.append(f"<div class='chan' id='{_t(ch['anchor'])}'><b>channel {_num(ch['channel'], 'd')}</b> (rank {_num(ch['rank'], 'd')}, "
                       f"AUC {_num(ch['auc'])}, d {_num(ch['d'], '.2f')}); colour scale on every tile of this "
                       f"channel ({_t(ctx['colormap'])}): <span class='scale'>0 <span class='cbar' "
                       f"style=\"background:{_t(ctx['colour_bar'])}\"></span> {_num(ch['vmax'])}</span>")
            for scope in ch["scopes"]:
                out.append(f"<div class='muted'>{_t(scope['title'])}</div><div class='tiles'>"
                           + "".join(_tile(t) for t in scope["tiles"]) + "</div>")
            out.append("</div>")
    return "".join(out)


def _section_mistakes(ctx: Mapping[str, Any]) -> str:
    out = ["<h2 id='mistakes'>Most confident mistakes</h2>", f"<p>{_t(ctx['mistakes_note'])}</p>"]
    for group in ctx["mistakes"]:
        out.append(f"<h3>{_t(group['layer'])}</h3><div class='tiles'>" + "".join(_tile(t) for t in group["tiles"])
                   + "</div>")
    return "".join(out)


def _section_check(ctx: Mapping[str, Any]) -> str:
    rows = ctx["mismatches"]
    out = ["<h2 id='check'>Recomputed activations</h2>", f"<p>{_t(ctx['check_note'])}</p>"]
    if rows:
        out.append(_table(("image", "layer", "channel", "recorded", "recomputed"),
                          [(_t(r["image_id"]), _t(r["layer"]), _num(r["channel"], "d"), _num(r["recorded"], ".5f"),
                            _num(r["recomputed"], ".5f")) for r in rows]))
    return "".join(out)


def _section_loading(load: Mapping[str, Any]) -> str:
    links = "".join(f'<li><a href="{_url(href)}">{_t(text)}</a></li>' for text, href in load["links"])
    return (f"<h2 id='data'>Load the data</h2><ul>{links}</ul><pre><code>{_t(load['snippet'])}</code></pre>"
            f"<p>{_t(load['rerun'])}</p>")


def _section_browser(ctx: Mapping[str, Any]) -> str:
    if not ctx.get("browser"):
        return ""
    return ("<h2 id='browser'>Channel browser</h2><p>Every channel of every recorded layer. Sort by a column "
            "(click its header, again to reverse), filter by layer or channel number, and select a row (click or "
            "Enter) to see the channel's statistics and histogram per class and its galleries.</p>"
            "<p><label>Layer <select id='cb-layer'><option value='all'>all</option></select></label> "
            "<label>Channel number <input id='cb-filter' type='search' inputmode='numeric'></label> "
            "<span id='cb-count' class='muted'></span></p>"
            "<div id='cb-detail' class='detail'></div><div class='scroll'><table id='cb-table'></table></div>")


def _section_map(ctx: Mapping[str, Any]) -> str:
    e = ctx.get("explorer")
    if not e:
        return ""
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")   # explorer.js's, in order
    legend = " ".join(f"<span class='key' style='background:{colours[k % len(colours)]}'></span>{_t(c)}"
                      for k, c in enumerate(e["classes"]))
    x, y = e["explained"]
    return ("<h2 id='map'>Dataset map and image lookup</h2>"
            f"<p>Each ok image is a point at its first two principal components of the {_t(e['layer'])} channel "
            f"means ({_t(e['method'])}; the axes explain {x:.1%} and {y:.1%} of the variance), coloured by "
            f"{'label' if e['group_by'] == 'label' else 'predicted class'}: {legend}; circled: mistakes. Hover a "
            "point for its id, click it for its card.</p>"
            "<div class='mapbox'><canvas id='map-canvas' width='900' height='520' aria-label='dataset map'></canvas></div>"
            "<div id='map-tip' class='tip' hidden></div>"
            "<p><label>Find an image by part of its id: <input id='lookup' type='search'></label></p>"
            "<ul id='lookup-list' class='lookup'></ul><div id='card' class='detail'></div>")


def render_page(ctx: Mapping[str, Any]) -> str:
    """The whole page as a string."""
    banners = "".join(f'<div class="banner {"warn" if b["level"] == "warn" else "info"}">{_t(b["text"])}</div>'
                      for b in ctx["banners"])
    nav = "".join(f'<a href="#{a}">{_t(t)}</a>' for a, t in (
        ("run", "run"), ("quality", "data quality"), ("classification", "classification"),
        ("channels", "channels"), ("browser", "channel browser"), ("map", "map and images"),
        ("galleries", "galleries"), ("mistakes", "mistakes"), ("check", "check"),
        ("data", "load the data")))
    body = "".join((
        f"<h1>{_t(ctx['title'])}</h1>", f"<nav>{nav}</nav>", banners, _section_run(ctx),
        _section_quality(ctx["quality"]), _section_classification(ctx["classification"]), _section_channels(ctx),
        _section_browser(ctx), _section_map(ctx), _section_galleries(ctx), _section_mistakes(ctx), _section_check(ctx), _section_loading(ctx["loading"])))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_t(ctx['title'])}</title><style>{_CSS}</style></head><body>{body}"
            f'<script type="application/json" id="report-data">{_json({"ids": ctx["tile_ids"]})}</script>'
            f"<script>{_SCRIPT}</script>{_browser_scripts(ctx)}</body></html>\n")


def _browser_scripts(ctx: Mapping[str, Any]) -> str:
    out = []
    for key, script in (("browser", BROWSER_SCRIPT), ("explorer", EXPLORER_SCRIPT)):
        if ctx.get(key):
            out.append(f'<script type="application/json" id="{key}-data">{_json(ctx[key])}</script>'
                       f"<script>{script.read_text(encoding='utf-8')}</script>")
    return "".join(out)
