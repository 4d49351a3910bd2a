"""The concepts on the page (issue #21): per class, its concepts ordered by importance, each a row of the regions
where it is strongest with its share of the layer's contribution to the class logit, its presence AUC and its top
channels (links to the channel browser); per image, the concepts that pushed it toward each class (the cards, the
mistakes). Plain data for section_answer.html, cards.py and tiles.py, from the concept stage's tables.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.store import concept_contract as cc
from analysis.store import contract
from reports.run.dataset_issues import card_link

FIRST = 4  # concept rows per class on the first screen; the others fold under them
PER_IMAGE = 3  # concepts named per image and class (cards, mistakes): the largest contributions


def make_concept_rows(concepts: pd.DataFrame, tiles: Mapping[tuple[str, int], list[dict]], cls: str) -> list[dict]:
    """The class's concept rows, most important first: {"name", "share", "importance", "auc", "channels": [{"name",
    "href", "weight"}], "tiles": [{"image_id", "src", "heat", "peak", "href"}], "error"}."""
    rows = concepts[concepts[contract.CLASS] == cls].sort_values(cc.CONCEPT)
    out = []
    for _, r in rows.iterrows():
        layer, j = str(r[contract.LAYER]), int(r[cc.CONCEPT])
        out.append(
            {
                "name": f"concept {j + 1}",
                "share": _number(r[cc.SHARE]),
                "importance": _number(r[cc.IMPORTANCE]),
                "auc": _number(r[cc.PRESENCE_AUC]),
                "error": _number(r[cc.RECONSTRUCTION_ERROR]),
                "channels": [
                    {"name": f"c{int(c)}", "href": f"#channel={layer}:{int(c)}", "weight": float(w)}
                    for c, w in zip(r[cc.CHANNELS], r[cc.WEIGHTS])
                ],
                "tiles": [{**t, "href": card_link(t["image_id"])} for t in tiles.get((cls, j), [])],
            }
        )
    return out


def describe_concepts(concepts: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    """The line under the concept rows: what a concept and its numbers are, from the stage's metadata."""
    layer = meta.get("layer", "?")
    sampled = (meta.get("images") or {}).get("sampled")
    return (
        f"Concepts: each class's images factorised at {layer} into {meta.get('k', '?')} non-negative parts "
        "(CRAFT, Fel et al. 2023: an NMF of the activations at every position of "
        + (f"{sampled:,} sampled images" if sampled else "a sample of its images")
        + "); every image projected on them. A row shows the regions of the class's images where the concept is "
        "strongest (hover: where it is in the region). Share: the concept's mean contribution to the class logit "
        f"(gradient x activation at {layer}, projected on the concept) over the sum of the positive ones (the "
        "residual's too, what no concept holds); presence AUC: how "
        "well its presence tells the class from the rest; channels: the concept's largest weights."
    )


def index_image_concepts(images: pd.DataFrame, image_ids: Sequence[str], classes: Sequence[str]) -> list[list]:
    """Per image of `image_ids` (the map's rows), per class: [[concept number, contribution, presence], ...] of
    that class's PER_IMAGE concepts with the largest contributions to it on the image ([] where it has none)."""
    where = {str(i): n for n, i in enumerate(image_ids)}
    out: list[list] = [[[] for _ in classes] for _ in image_ids]
    if images.empty:
        return out
    col = {c: k for k, c in enumerate(classes)}
    top = images.sort_values(cc.CONTRIBUTION, ascending=False, kind="stable")
    top = top.groupby([contract.IMAGE_ID, contract.CLASS], sort=False).head(PER_IMAGE)
    for image_id, cls, j, v, p in zip(
        top[contract.IMAGE_ID], top[contract.CLASS], top[cc.CONCEPT], top[cc.CONTRIBUTION], top[cc.PRESENCE]
    ):
        row, k = where.get(str(image_id)), col.get(cls)
        if row is not None and k is not None:
            out[row][k].append([int(j) + 1, float(f"{v:.4g}"), float(f"{p:.4g}")])
    return out


def describe_pushed(images: pd.DataFrame, image_id: str, cls: str) -> str | None:
    """A mistake's line: the concepts of the wrong class that pushed this image toward it most."""
    rows = images[(images[contract.IMAGE_ID] == image_id) & (images[contract.CLASS] == cls)]
    rows = rows.sort_values(cc.CONTRIBUTION, ascending=False).head(PER_IMAGE)
    if rows.empty:
        return None
    parts = [f"concept {int(j) + 1} ({v:+.3g})" for j, v in zip(rows[cc.CONCEPT], rows[cc.CONTRIBUTION])]
    return f"{cls}'s concepts that pushed it: " + ", ".join(parts)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value)


def make_concept_section(
    concepts: pd.DataFrame, tiles: Mapping[tuple[str, int], list[dict]], meta: Mapping[str, Any], note: str | None
) -> dict[str, Any]:
    """The answer's concepts: {"classes": {class: rows}, "note": what they are, "skipped": why some or all are
    missing (None: nothing is)}."""
    classes = list(dict.fromkeys(concepts[contract.CLASS])) if not concepts.empty else []
    skipped = [note] if note else []
    skipped += [n for n in meta.get("notes") or [] if n not in skipped]
    return {
        "classes": {cls: make_concept_rows(concepts, tiles, cls) for cls in classes},
        "note": describe_concepts(concepts, meta) if classes else None,
        "skipped": "; ".join(skipped) or None,
    }
