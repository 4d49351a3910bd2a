"""The report page's context: plain data (strings, numbers, relative paths) gathered for reports/run/html.py."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.store import contract
from analysis.data.names import make_display
from analysis.stats.relabel import describe_outside_classes
from reports.banners import make_unverified_weights
from reports.overlays import make_css_gradient
from reports.run.browser import gallery_anchor, make_browser


@dataclasses.dataclass
class Overlays:
    tiles: dict[tuple[str, str, int], str]           # (image_id, layer, channel) -> tile path relative to the page
    scales: dict[tuple[str, int], tuple[float, float]]  # (layer, channel) -> (vmin, vmax) of its colour scale
    unreadable: dict[str, str]                         # image_id -> why it could not be re-run
    mismatches: list[dict[str, Any]]                   # recomputed means that differ from the recorded ones
    checked: int                                       # channel means compared
    note: str | None                                   # why there are no overlays, or what differs from the run
    gradcams: dict[str, list[tuple[str, str, float]]] = dataclasses.field(default_factory=dict)
    colormap: str = "viridis"                          # of every tile: the galleries' colour bars show it
    views: dict[str, str] = dataclasses.field(default_factory=dict)  # image_id -> thumbnail of the crop it saw
    # image_id -> [(class, tile path, vmax of its own colour scale)]: Grad-CAM of the predicted (and true) class


def _run_rows(meta: Mapping[str, Any], seconds: float, labels: Mapping[str, Any]) -> list[tuple[str, str]]:
    w, c, t = meta.get("weights") or {}, meta.get("counts") or {}, meta.get("timings") or {}
    pre = meta.get("preprocess") or {}
    layers = meta.get("layers") or {}
    unverified = " (unverified: its sha256 does not match its name)" if w.get("verified") is False else ""
    return [
        ("model", meta.get("model", "?")), ("weights", w.get("id", "?") + unverified),
        ("weights sha256", w.get("sha256") or "-"),
        ("classes", ", ".join(meta.get("classes") or [])), ("labels", _labels_row(labels)),
        ("layers", f"{len(layers)}: " + ", ".join(f"{k} ({v})" for k, v in layers.items())),
        ("preprocessing", f"{pre.get('name', '?')}: {pre.get('steps', '')}"),
        ("device, precision", f"{meta.get('device', '?')}, {meta.get('precision', '?')}"),
        ("images", f"{c.get('found', '?')} found, {c.get('ok', '?')} ok, {c.get('error', '?')} errors, "
                   f"{c.get('skipped', 0)} other files skipped"),
        ("throughput", f"{t.get('images_per_s', '?')} images/s over {t.get('seconds', '?')} s (extract)"),
        ("data", f"{(meta.get('data') or {}).get('path', '?')} ({(meta.get('data') or {}).get('layout', '?')})"),
        ("finished", meta.get("finished", "?")), ("report", f"{seconds:.1f} s"),
        ("versions", ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())),
    ]


def _labels_row(labels: Mapping[str, Any]) -> str:
    if labels.get("source") == "report":
        return f"{labels['csv']} (given to the report, --labels; sha256 {str(labels.get('sha256'))[:12]})"
    if labels.get("csv"):
        return f"{labels['csv']} (given to the extract, --labels), then file and folder names"
    return "the run's, from file and folder names"


def _banner(level: str, *parts: str | tuple[str, bool]) -> dict[str, Any]:
    """A banner of plain text and (value, True) parts shown as code."""
    parts_ = [p if isinstance(p, tuple) else (p, False) for p in parts]
    return {"level": level, "parts": parts_, "text": "".join(t for t, _ in parts_)}


def _label_banners(labels: Mapping[str, Any], classes: Sequence[str], n_images: int) -> list[dict[str, Any]]:
    """Where the labels came from when a CSV gave them; ids of a report's CSV that match no image; labels outside
    the classes."""
    out = []
    if labels.get("source") == "report":
        parts: list = ["Labels from ", (str(labels["csv"]), True),
                       f", given to this report (--labels), not the run's: {labels['changed']} of {n_images} images "
                       f"relabelled ({labels['matched']} of the CSV's {labels['ids']} ids match an image). "
                       "Statistics, rankings, galleries, accuracy and dataset checks use these labels."]
        if labels.get("unmatched_count"):
            more = labels["unmatched_count"] - len(labels["unmatched"])
            n = labels["unmatched_count"]
            parts.append(f" {n} {'ids match' if n != 1 else 'id matches'} no image: "
                         + ", ".join(repr(i) for i in labels["unmatched"]) + (f" and {more} more." if more else "."))
        out.append(_banner("info", *parts))
    elif labels.get("csv"):
        out.append(_banner("info", "Labels from ", (str(labels["csv"]), True), ", given to the extract (--labels); "
                           "images it does not name keep the labels of their file or folder names."))
    outside = describe_outside_classes(labels.get("outside_classes") or {}, classes)
    if outside:
        out.append(_banner("warn", outside))
    return out


def _channel_table(s: pd.DataFrame, rank: str, m: int) -> list[dict[str, Any]]:
    top = s.sort_values(rank).head(m)
    return [{"channel": int(r[contract.CHANNEL]), "auc": float(r[contract.AUC]), "d": float(r[contract.COHENS_D]),
             "mean": float(r[contract.MEAN]), "rest_mean": float(r[contract.REST_MEAN]),
             "rank_mean": int(r[contract.RANK_MEAN]),
             "contrib": None if pd.isna(r[contract.CONTRIB_MEAN]) else float(r[contract.CONTRIB_MEAN]),
             "rank_contrib": None if pd.isna(r[contract.RANK_CONTRIBUTION]) else int(r[contract.RANK_CONTRIBUTION])}
            for _, r in top.iterrows()]


def _tile(row: pd.Series, overlays: Overlays, ids: list[str]) -> dict[str, Any]:
    image_id = row[contract.IMAGE_ID]
    ids.append(image_id)
    src = overlays.tiles.get((image_id, row[contract.LAYER], int(row[contract.CHANNEL])))
    conf = row.get(contract.CONFIDENCE)
    return {"i": len(ids) - 1, "image_id": image_id, "src": src, "value": float(row[contract.VALUE]),
            "label": row[contract.LABEL] if isinstance(row[contract.LABEL], str) else None,
            "pred": (f"{row[contract.PRED]} ({conf:.0%})" if isinstance(row[contract.PRED], str) and pd.notna(conf)
                     else None),
            "why": overlays.unreadable.get(image_id) or overlays.note or "no overlay",
            "cams": [{"class": cls, "src": src, "vmax": vmax} for cls, src, vmax in overlays.gradcams.get(image_id, [])]}


def _scopes(ch: pd.DataFrame, cls: str, overlays: Overlays, ids: list[str]) -> list[dict]:
    """The channel's galleries over all images and within the class; one when both hold the same images."""
    ranked = {scope: ch[ch[contract.SCOPE] == scope].sort_values(contract.IMAGE_RANK)
              for scope in (contract.SCOPE_ALL, contract.SCOPE_CLASS)}
    same = list(ranked[contract.SCOPE_ALL][contract.IMAGE_ID]) == list(ranked[contract.SCOPE_CLASS][contract.IMAGE_ID])
    titles = ({contract.SCOPE_ALL: f"top images over all images (the same as within class {cls})"} if same else
              {contract.SCOPE_ALL: "top images over all images", contract.SCOPE_CLASS: f"top images of class {cls}"})
    return [{"title": title, "tiles": [_tile(r, overlays, ids) for _, r in ranked[scope].iterrows()]}
            for scope, title in titles.items()]


def _galleries(examples: pd.DataFrame, stats: pd.DataFrame, overlays: Overlays, ids: list[str],
               classes: Sequence[str]) -> list[dict]:
    s = stats[stats[contract.STAT] == contract.STAT_MEAN].set_index([contract.LAYER, contract.CLASS, contract.CHANNEL])
    out = []
    shown = examples[examples[contract.SCOPE] != contract.SCOPE_MISTAKE]
    for (layer, cls), g in shown.groupby([contract.LAYER, contract.CLASS], sort=False):
        channels = []
        for rank, ch in g.groupby(contract.CHANNEL_RANK, sort=True):
            c = int(ch[contract.CHANNEL].iloc[0])
            row = s.loc[(layer, cls, c)]
            channels.append({"channel": c, "rank": int(rank), "auc": float(row[contract.AUC]),
                             "d": float(row[contract.COHENS_D]), "vmax": overlays.scales.get((layer, c), (0, None))[1],
                             "scopes": _scopes(ch, cls, overlays, ids),
                             "anchor": gallery_anchor(layer, list(classes).index(cls), c)})
        out.append({"layer": layer, "class": cls, "channels": channels})
    return out


def make_context(meta: Mapping[str, Any], run: Path, out: Path, predictions: pd.DataFrame, group_by: str,
                 stats: pd.DataFrame, examples: pd.DataFrame, overlays: Overlays, figures: Mapping[str, Any],
                 layers: Sequence[str], top_channels: int, note: str | None, seconds: float,
                 mistake_drivers: Mapping[tuple[str, str], list[tuple[int, float]]] | None = None,
                 histograms: Mapping[str, Mapping[str, Any]] | None = None,
                 explorer: Mapping[str, Any] | None = None,
                 dataset_checks: Mapping[str, Any] | None = None,
                 labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    classes = list(meta.get("classes") or [])
    labels = labels or {"source": "run", "csv": (meta.get("data") or {}).get("labels_csv")}
    ids: list[str] = []
    banners = []
    weights = meta.get("weights") or {}
    if weights.get("random"):
        banners.append(_banner("warn", "RANDOM WEIGHTS: this run used an untrained network; its predictions, channel "
                               "rankings and pictures mean nothing. Use it to check the tool only."))
    if weights.get("verified") is False:
        banners.append(_banner("warn", *make_unverified_weights(weights.get("path"), str(weights.get("id")))))
    banners += _label_banners(labels, classes, len(predictions))
    if note:
        banners.append(_banner("info", note))
    if group_by == contract.GROUP_PRED:
        banners.append(_banner("info", "This run has no labels: every statistic groups images by the class the "
                               "model predicted, not by a true class."))
    if overlays.mismatches:
        banners.append(_banner("warn", f"{len(overlays.mismatches)} of {overlays.checked} recomputed channel means "
                               "differ from the recorded ones: the images, weights or preprocessing changed since "
                               "the run (see 'Recomputed activations')."))
    ok = predictions[predictions[contract.STATUS] == contract.STATUS_OK]
    labeled = ok[ok[contract.LABEL].isin(classes)]
    acc = float((labeled[contract.PRED] == labeled[contract.LABEL]).mean()) if len(labeled) else None
    summary = (f"Accuracy {acc:.1%} on {len(labeled)} labeled images." if acc is not None
               else "No labels: no accuracy; the histograms show the predicted probabilities.")
    errors = predictions[contract.ERROR].dropna().value_counts()
    skipped = (meta.get("counts") or {}).get("skipped_by_reason") or {}
    layer_ctx = []
    for layer in layers:
        s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
        layer_ctx.append({"layer": layer, "figures": figures["layers"][layer], "classes": [
            {"class": cls, "selective": _channel_table(s[s[contract.CLASS] == cls], contract.RANK_SELECTIVITY,
                                                       top_channels),
             "by_mean": _channel_table(s[s[contract.CLASS] == cls], contract.RANK_MEAN, top_channels),
             "drivers": (_channel_table(s[s[contract.CLASS] == cls], contract.RANK_CONTRIBUTION, top_channels)
                         if s[contract.CONTRIB_MEAN].notna().any() else None)} for cls in classes]})
    mistakes = examples[examples[contract.SCOPE] == contract.SCOPE_MISTAKE]
    mistake_groups = []
    mistake_drivers = mistake_drivers or {}
    for layer in layers:
        tiles = []
        for _, r in mistakes[mistakes[contract.LAYER] == layer].sort_values(contract.IMAGE_RANK).iterrows():
            tile = _tile(r, overlays, ids)
            tile["label"] = f"{tile['label']}; c{int(r[contract.CHANNEL])} pushed hardest (z {r[contract.PUSH]:.1f})"
            drove = mistake_drivers.get((r[contract.IMAGE_ID], layer))
            if drove:
                tile["label"] += (f"; drove {r[contract.PRED]} most: "
                                  + ", ".join(f"c{c} ({v:.3g})" for c, v in drove))
            tiles.append(tile)
        if tiles:
            mistake_groups.append({"layer": layer, "tiles": tiles})
    checked = (f"{overlays.checked} channel means of the shown images were recomputed; "
               f"{len(overlays.mismatches)} differ from the recorded values beyond the tolerance of "
               f"{meta.get('precision', 'fp32')}.") if overlays.checked else (overlays.note or "Nothing recomputed.")
    galleries = _galleries(examples, stats, overlays, ids, classes)
    rel = os.path.relpath(run, out)
    return {
        "title": f"CNN black box: {make_display(Path(str((meta.get('data') or {}).get('path') or run)).name)}",
        "banners": banners, "run": _run_rows(meta, seconds, labels),
        "quality": {"figure": figures["quality"], "errors": list(errors.items()), "skipped": list(skipped.items())},
        "classification": {"summary": summary, "figures": figures["classification"]},
        "group_note": (f"Statistics over the ok images grouped by {'label' if group_by == contract.GROUP_LABEL else 'predicted class'}"
                       "; each class against all the others. ROC AUC: the chance that an image of the class has a "
                       "higher channel mean than one of the others (0.5 = no preference); d: Cohen's d, the "
                       "difference of the means in pooled standard deviations. Tables: the report's layers; "
                       "channel_stats.parquet has every layer."),
        "selectivity_figure": figures["selectivity"], "layers": layer_ctx,
        "gallery_note": ("Tiles show the crop the network saw with the channel's map over it; the number is the "
                         "channel mean recorded by extract."),
        "overlay_note": overlays.note, "galleries": galleries,
        "browser": make_browser(stats, histograms, classes, galleries, layers) if histograms else None,
        "explorer": explorer, "dataset_checks": dataset_checks or {"off": "No dataset checks.", "issues": []},
        "colour_bar": make_css_gradient(overlays.colormap), "colormap": overlays.colormap,
        "mistakes_note": ("Wrong predictions with the highest confidence, with the channel (among the predicted "
                          "class's most selective) whose value was furthest above the true class's mean, in standard "
                          "deviations (z)." if len(mistakes) else "No mistakes to show (no labels or no errors)."),
        "mistakes": mistake_groups, "mismatches": overlays.mismatches[:50], "check_note": checked,
        "tile_ids": ids,
        "loading": {"links": [("channel_stats.parquet", contract.CHANNEL_STATS), ("top_examples.parquet",
                                                                                  contract.TOP_EXAMPLES),
                              ("predictions/", f"{rel}/{contract.PREDICTIONS}/"),
                              ("activations/", f"{rel}/{contract.ACTIVATIONS}/"), ("run.json",
                                                                                   f"{rel}/{contract.RUN_JSON}")],
                    "snippet": _snippet(run, layers[0] if layers else "conv5_3"),
                    "rerun": f"Rerun this page: make report RUN={make_display(run)}  "
                             f"(or python -m jobs.report --run {make_display(run)})"},
    }


def _snippet(run: Path, layer: str) -> str:
    return (f"import pandas as pd\n"
            f"run = {str(run)!r}\n"
            f"preds = pd.read_parquet(f\"{{run}}/{contract.PREDICTIONS}\")\n"
            f"acts = pd.read_parquet(f\"{{run}}/{contract.ACTIVATIONS}/{layer}\").set_index(\"{contract.IMAGE_ID}\")\n"
            f"stats = pd.read_parquet(f\"{{run}}/{contract.REPORT_DIR}/{contract.CHANNEL_STATS}\")\n"
            f"top = stats.query(\"{contract.LAYER} == '{layer}' and {contract.STAT} == 'mean' and {contract.RANK_SELECTIVITY} <= 8\")\n"
            f"frame = acts.join(preds.set_index(\"{contract.IMAGE_ID}\")[[\"{contract.LABEL}\", \"{contract.PRED}\"]])\n")
