"""The report page's context: plain data (strings, numbers, relative paths) for reports/run/html.py, built from one
ReportInputs by a builder per section (each returns its part of the context); make_context joins them. The head is
built in reports/run/header.py, the sections of image tiles in reports/run/tiles.py; the rest here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.data.names import make_display
from analysis.store import contract
from reports.run.answer import make_answer
from reports.run.browser import make_browser
from reports.run.header import make_head
from reports.run.inputs import ReportInputs
from reports.run.tiles import make_mistakes


def make_context(inputs: ReportInputs) -> dict[str, Any]:
    """The page's context, a part per section."""
    return {
        **make_head(inputs),
        **make_answer(inputs),
        **_quality(inputs),
        "dataset_issues": inputs.dataset_issues,
        **_classification(inputs),
        **_channels(inputs),
        "browser": _browser(inputs),
        "explorer": {**inputs.explorer, "cards": inputs.cards} if inputs.explorer else None,
        **make_mistakes(inputs),
        **_check(inputs),
        "loading": _loading(inputs),
    }


def _quality(inputs: ReportInputs) -> dict[str, Any]:
    skipped = (inputs.meta.get("counts") or {}).get("skipped_by_reason") or {}
    return {
        "quality": {
            "figure": inputs.figures["quality"],
            "errors": list(inputs.summary.errors.items()),
            "skipped": list(skipped.items()),
        }
    }


def _classification(inputs: ReportInputs) -> dict[str, Any]:
    s = inputs.summary
    summary = (
        f"Accuracy {s.accuracy:.1%} on {s.labeled} labeled images."
        if s.accuracy is not None
        else "No labels: no accuracy; the histograms show the predicted probabilities."
    )
    return {"classification": {"summary": summary, "figures": inputs.figures["classification"]}}


def _channels(inputs: ReportInputs) -> dict[str, Any]:
    """Per layer, each class's most selective channels, its channels by mean, and its drivers where attributed."""
    stats, m = inputs.stats, inputs.top_channels
    layers = []
    for layer in inputs.layers:
        s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
        attributed = s[contract.CONTRIB_MEAN].notna().any()
        layers.append(
            {
                "layer": layer,
                "figures": inputs.figures["layers"][layer],
                "classes": [
                    {
                        "class": cls,
                        "selective": _channel_table(s[s[contract.CLASS] == cls], contract.RANK_SELECTIVITY, m),
                        "by_mean": _channel_table(s[s[contract.CLASS] == cls], contract.RANK_MEAN, m),
                        "drivers": (
                            _channel_table(s[s[contract.CLASS] == cls], contract.RANK_CONTRIBUTION, m)
                            if attributed
                            else None
                        ),
                    }
                    for cls in inputs.classes
                ],
            }
        )
    by = "label" if inputs.summary.group_by == contract.GROUP_LABEL else "predicted class"
    return {
        "group_note": (
            f"Statistics over the ok images grouped by {by}; each class against all the others. "
            "ROC AUC: the chance that an image of the class has a higher channel mean than one of "
            "the others (0.5 = no preference); d: Cohen's d, the difference of the means in pooled "
            "standard deviations. Tables: the report's layers; channel_stats.parquet has every layer."
        ),
        "selectivity_figure": inputs.figures["selectivity"],
        "layers": layers,
    }


def _channel_table(s: pd.DataFrame, rank: str, m: int) -> list[dict[str, Any]]:
    top = s.sort_values(rank).head(m)
    return [
        {
            "channel": int(r[contract.CHANNEL]),
            "auc": float(r[contract.AUC]),
            "d": float(r[contract.COHENS_D]),
            "mean": float(r[contract.MEAN]),
            "rest_mean": float(r[contract.REST_MEAN]),
            "rank_mean": int(r[contract.RANK_MEAN]),
            "contrib": None if pd.isna(r[contract.CONTRIB_MEAN]) else float(r[contract.CONTRIB_MEAN]),
            "rank_contrib": None if pd.isna(r[contract.RANK_CONTRIBUTION]) else int(r[contract.RANK_CONTRIBUTION]),
        }
        for _, r in top.iterrows()
    ]


def _browser(inputs: ReportInputs) -> dict[str, Any] | None:
    """The channel browser's data, with every report layer's channel galleries; None without histograms."""
    if not inputs.histograms:
        return None
    return make_browser(inputs.stats, inputs.histograms, inputs.classes, inputs.layers, inputs.channel_galleries)


def _check(inputs: ReportInputs) -> dict[str, Any]:
    """The recomputed activations: how many were compared, and the ones that differ."""
    overlays = inputs.overlays
    if not overlays.checked:
        note = overlays.note or "Nothing recomputed."
    else:
        note = (
            f"{overlays.checked} channel means of the shown images were recomputed; {len(overlays.mismatches)} "
            f"differ from the recorded values beyond the tolerance of {inputs.meta.get('precision', 'fp32')}."
        )
    return {"mismatches": overlays.mismatches[:50], "check_note": note}


def _loading(inputs: ReportInputs) -> dict[str, Any]:
    """Links to the tables, a pandas snippet that loads them, the command that rebuilds this page."""
    run = inputs.run
    rel = os.path.relpath(run, inputs.out)
    return {
        "links": [
            ("channel_stats.parquet", contract.CHANNEL_STATS),
            ("top_examples.parquet", contract.TOP_EXAMPLES),
            ("predictions/", f"{rel}/{contract.PREDICTIONS}/"),
            ("activations/", f"{rel}/{contract.ACTIVATIONS}/"),
            ("run.json", f"{rel}/{contract.RUN_JSON}"),
        ],
        "snippet": _snippet(run, inputs.layers[0] if inputs.layers else "conv5_3"),
        "rerun": f"Rerun this page: make report RUN={make_display(run)}  "
        f"(or python -m jobs.report --run {make_display(run)})",
    }


def _snippet(run: Path, layer: str) -> str:
    """Python that loads the run's tables and this page's statistics."""
    return (
        f"import pandas as pd\n"
        f"run = {str(run)!r}\n"
        f'preds = pd.read_parquet(f"{{run}}/{contract.PREDICTIONS}")\n'
        f'acts = pd.read_parquet(f"{{run}}/{contract.ACTIVATIONS}/{layer}").set_index("{contract.IMAGE_ID}")\n'
        f'stats = pd.read_parquet(f"{{run}}/{contract.REPORT_DIR}/{contract.CHANNEL_STATS}")\n'
        f"top = stats.query(\"{contract.LAYER} == '{layer}' and {contract.STAT} == 'mean' "
        f'and {contract.RANK_SELECTIVITY} <= 8")\n'
        f'frame = acts.join(preds.set_index("{contract.IMAGE_ID}")'
        f'[["{contract.LABEL}", "{contract.PRED}"]])\n'
    )
