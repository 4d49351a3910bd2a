"""The report page's head: its title, the banners above it (weights, labels, the user's note, the grouping,
recomputed means that differ) and the run's rows. A part of the context that reports/run/page.py joins."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from analysis.data.names import make_display
from analysis.stats.relabel import describe_outside_classes
from analysis.store import contract
from reports.banners import make_unverified_weights
from reports.run.inputs import ReportInputs


def make_head(inputs: ReportInputs) -> dict[str, Any]:
    """The title, the banners and the run's rows."""
    name = make_display(Path(str((inputs.meta.get("data") or {}).get("path") or inputs.run)).name)
    return {
        "title": f"CNN black box: {name}",
        "banners": _banners(inputs),
        "run": _run_rows(inputs.meta, inputs.seconds, inputs.labels),
    }


def _banners(inputs: ReportInputs) -> list[dict[str, Any]]:
    """Above the page: the weights, the labels, the user's note, the grouping, recomputed means that differ."""
    banners = []
    weights = inputs.meta.get("weights") or {}
    if weights.get("random"):
        banners.append(
            _banner(
                "warn",
                "RANDOM WEIGHTS: this run used an untrained network; its predictions, channel "
                "rankings and pictures mean nothing. Use it to check the tool only.",
            )
        )
    if weights.get("verified") is False:
        banners.append(_banner("warn", *make_unverified_weights(weights.get("path"), str(weights.get("id")))))
    banners += _label_banners(inputs.labels, inputs.classes, inputs.summary.found)
    if inputs.note:
        banners.append(_banner("info", inputs.note))
    if inputs.summary.group_by == contract.GROUP_PRED:
        banners.append(
            _banner(
                "info",
                "This run has no labels: every statistic groups images by the class the "
                "model predicted, not by a true class.",
            )
        )
    overlays = inputs.overlays
    if overlays.mismatches:
        banners.append(
            _banner(
                "warn",
                f"{len(overlays.mismatches)} of {overlays.checked} recomputed channel means "
                "differ from the recorded ones: the images, weights or preprocessing changed since "
                "the run (see 'Recomputed activations').",
            )
        )
    return banners


def _run_rows(meta: Mapping[str, Any], seconds: float, labels: Mapping[str, Any]) -> list[tuple[str, str]]:
    w, c, t = meta.get("weights") or {}, meta.get("counts") or {}, meta.get("timings") or {}
    pre = meta.get("preprocess") or {}
    layers = meta.get("layers") or {}
    unverified = " (unverified: its sha256 does not match its name)" if w.get("verified") is False else ""
    return [
        ("model", meta.get("model", "?")),
        ("weights", w.get("id", "?") + unverified),
        ("weights sha256", w.get("sha256") or "-"),
        ("classes", ", ".join(meta.get("classes") or [])),
        ("labels", _labels_row(labels)),
        ("layers", f"{len(layers)}: " + ", ".join(f"{k} ({v})" for k, v in layers.items())),
        ("preprocessing", f"{pre.get('name', '?')}: {pre.get('steps', '')}"),
        ("device, precision", f"{meta.get('device', '?')}, {meta.get('precision', '?')}"),
        (
            "images",
            f"{c.get('found', '?')} found, {c.get('ok', '?')} ok, {c.get('error', '?')} errors, "
            f"{c.get('skipped', 0)} other files skipped",
        ),
        ("throughput", f"{t.get('images_per_s', '?')} images/s over {t.get('seconds', '?')} s (extract)"),
        ("data", f"{(meta.get('data') or {}).get('path', '?')} ({(meta.get('data') or {}).get('layout', '?')})"),
        ("finished", meta.get("finished", "?")),
        ("report", f"{seconds:.1f} s"),
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
        parts: list = [
            "Labels from ",
            (str(labels["csv"]), True),
            f", given to this report (--labels), not the run's: {labels['changed']} of {n_images} images "
            f"relabelled ({labels['matched']} of the CSV's {labels['ids']} ids match an image). "
            "Statistics, rankings, galleries, accuracy and dataset checks use these labels.",
        ]
        if labels.get("unmatched_count"):
            more = labels["unmatched_count"] - len(labels["unmatched"])
            n = labels["unmatched_count"]
            parts.append(
                f" {n} {'ids match' if n != 1 else 'id matches'} no image: "
                + ", ".join(repr(i) for i in labels["unmatched"])
                + (f" and {more} more." if more else ".")
            )
        out.append(_banner("info", *parts))
    elif labels.get("csv"):
        out.append(
            _banner(
                "info",
                "Labels from ",
                (str(labels["csv"]), True),
                ", given to the extract (--labels); "
                "images it does not name keep the labels of their file or folder names.",
            )
        )
    outside = describe_outside_classes(labels.get("outside_classes") or {}, classes)
    if outside:
        out.append(_banner("warn", outside))
    return out
