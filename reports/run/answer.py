"""The page's first section, the answer: per class, its concepts (reports/run/concepts.py) where the report found
them, each a row of the regions where it is strongest, then the few channels that drive the network's answer for it
(its strongest drivers at the deepest attributed report layer; the most selective channels where the run has no
attribution): without concepts each a row of its top images within the class, with them a line of links; each with
its share of the class logit and one line of numbers; and the accuracy and the confusion in one line. Plain data
for section_answer.html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats import topk
from analysis.stats.summary import PredictionSummary
from analysis.store import contract
from reports.run.concepts import FIRST
from reports.run.inputs import ReportInputs

IMAGES = 5  # images per row: five 112-px tiles fill one of two columns at 1400 px


def pick_answer_channels(stats: pd.DataFrame, layers: Sequence[str], classes: Sequence[str]) -> AnswerChannels:
    """The channels the answer shows: each class's strongest drivers at the deepest attributed report layer, or its
    most selective channels of the first report layer on a run without attribution. stats: channel_stats."""
    stats = stats[stats[contract.STAT] == contract.STAT_MEAN]
    layer = topk.find_driver_layer(stats, layers)
    rank = contract.RANK_SELECTIVITY if layer is None else contract.RANK_CONTRIBUTION
    shown = layer or layers[0]
    return AnswerChannels(shown, layer is not None, topk.select_ranked(stats, shown, classes, rank, topk.DRIVERS))


@dataclass(frozen=True)
class AnswerChannels:
    layer: str
    drivers: bool  # False: the run has no attribution, the channels are the most selective
    channels: Mapping[str, list[int]]  # class -> channels, best first

    def rows_of(self, examples: pd.DataFrame) -> pd.DataFrame:
        """The top_examples rows of these channels (the images their rows show)."""
        keys = {(self.layer, cls, c) for cls, chans in self.channels.items() for c in chans}
        mask = [k in keys for k in zip(examples[contract.LAYER], examples[contract.CLASS], examples[contract.CHANNEL])]
        return examples[mask]


def make_answer(inputs: ReportInputs) -> dict[str, Any]:
    """{"answer": {"accuracy", "layer", "note", "classes": [{"name", "rows": [...]}]}}; None without a layer."""
    if not inputs.layers:
        return {"answer": None}
    stats = inputs.stats[inputs.stats[contract.STAT] == contract.STAT_MEAN]
    picked = pick_answer_channels(stats, inputs.layers, inputs.classes)
    layer = picked.layer if picked.drivers else None
    note = (
        f"This run has no attribution: the rows are each class's most selective channels of {inputs.layers[0]} "
        "(by ROC AUC), not its drivers."
        if layer is None
        else ("Driver channels" if inputs.concepts and inputs.concepts.get("classes") else "Rows")
        + f": each class's strongest drivers at {layer}. Share: the channel's mean contribution to the class "
        f"logit (contrib_mean over the class's images) over the sum of the positive contrib_mean of all {layer} "
        "channels for that class."
    )
    layer, chosen = picked.layer, picked.channels
    classes = []
    for cls in inputs.classes:
        s = stats[(stats[contract.LAYER] == layer) & (stats[contract.CLASS] == cls)].set_index(contract.CHANNEL)
        positive = float(s[contract.CONTRIB_MEAN].clip(lower=0).sum())
        rows = []
        for c in chosen[cls]:
            r = s.loc[c]
            contrib = None if pd.isna(r[contract.CONTRIB_MEAN]) else float(r[contract.CONTRIB_MEAN])
            rows.append(
                {
                    "name": f"{layer}:{c}",
                    "contrib": contrib,
                    "share": contrib / positive if contrib is not None and positive > 0 else None,
                    "auc": float(r[contract.AUC]),
                    "href": f"#channel={layer}:{c}",  # the channel browser opens it with its galleries
                    "images": _images(inputs, layer, cls, c),
                }
            )
        classes.append({"name": cls, "rows": rows, **_concepts_of(inputs.concepts, cls)})
    concepts = inputs.concepts or {}
    return {
        "answer": {
            "accuracy": describe_accuracy(inputs.summary),
            "note": note,
            "classes": classes,
            "concepts_note": concepts.get("note"),
            "concepts_skipped": concepts.get("skipped"),
        }
    }


def _concepts_of(concepts: Mapping[str, Any] | None, cls: str) -> dict[str, Any]:
    """The class's concept rows, the first FIRST on the first screen and the rest folded: {"concepts", "more"}."""
    rows = ((concepts or {}).get("classes") or {}).get(cls) or []
    return {"concepts": rows[:FIRST], "more": rows[FIRST:]}


def _images(inputs: ReportInputs, layer: str, cls: str, channel: int) -> list[dict[str, Any]]:
    """The channel's top images within the class (then over all images), each once, as overlay tiles."""
    ex = inputs.examples
    rows = ex[(ex[contract.LAYER] == layer) & (ex[contract.CLASS] == cls) & (ex[contract.CHANNEL] == channel)]
    rows = rows[rows[contract.SCOPE] != contract.SCOPE_MISTAKE]
    rows = rows.assign(_scope=(rows[contract.SCOPE] != contract.SCOPE_CLASS).astype(int))
    out, seen = [], set()
    for _, r in rows.sort_values(["_scope", contract.IMAGE_RANK]).iterrows():
        image_id = r[contract.IMAGE_ID]
        if image_id in seen:
            continue
        seen.add(image_id)
        out.append(
            {
                "image_id": image_id,
                "src": inputs.overlays.tiles.get((image_id, layer, channel)),
                "value": float(r[contract.VALUE]),
                "why": inputs.overlays.unreadable.get(image_id) or inputs.overlays.note or "no overlay",
            }
        )
    return out[:IMAGES]


def describe_accuracy(summary: PredictionSummary) -> str:
    """ "Accuracy 85% on 20 labeled images; 2 images of cat called dog, ..." from the confusion matrix (rows true)."""
    if summary.accuracy is None:
        return "No labels: no accuracy; the rows below rank the channels by the predicted classes."
    m, classes = np.asarray(summary.matrix), summary.classes
    wrong = [
        f"{int(m[t, p])} {'image' if m[t, p] == 1 else 'images'} of {classes[t]} called {classes[p]}"
        for t in range(len(classes))
        for p in range(len(classes))
        if t != p and m[t, p] > 0
    ]
    head = f"Accuracy {summary.accuracy:.0%} on {summary.labeled} labeled images"
    return head + ("; " + ", ".join(wrong) if wrong else "; no mistakes") + "."
