"""The page's "Dataset checks" section (dataset_issues.parquet): counts per issue and rows of the worst cases, as
plain data.

Duplicates and similar scenes are shown a group or pair to a row, side by side; label issues and outliers one image
each. Every image links to its card in the dataset map (`#image=<id>`) and shows the crop the network saw when the
report re-ran it.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote

import pandas as pd

from analysis.stats.dataset_issues import DatasetIssues
from analysis.store import contract as C

TITLES = {
    C.ISSUE_EXACT_DUPLICATE: "exact duplicates",
    C.ISSUE_NEAR_DUPLICATE: "near duplicates",
    C.ISSUE_SIMILAR_SCENE: "similar scenes",
    C.ISSUE_LABEL: "likely label errors",
    C.ISSUE_OUTLIER: "outliers",
}
NOTES = {
    C.ISSUE_EXACT_DUPLICATE: "byte-identical files (the same sha256); groups whose labels differ first",
    C.ISSUE_NEAR_DUPLICATE: "the same picture resized, re-encoded, slightly cropped or made gray (their pHashes "
    "nearly agree); pairs whose labels differ first",
    C.ISSUE_SIMILAR_SCENE: "pairs much closer to each other, to the network, than to any other image (the same "
    "scene shot twice, or a wider crop); pairs whose labels differ first",
    C.ISSUE_LABEL: "the label disagrees with the model and with the image's nearest neighbours; worst first",
    C.ISSUE_OUTLIER: "far from every other image; furthest first",
}


PAIRED = {C.ISSUE_EXACT_DUPLICATE: C.GROUP, C.ISSUE_NEAR_DUPLICATE: C.PAIR, C.ISSUE_SIMILAR_SCENE: C.PAIR}


def list_worst(issues: pd.DataFrame, shown: int) -> list[str]:
    """The image ids the section shows (so that the report can make their thumbnails), in page order."""
    return list(dict.fromkeys(i for rows in _worst(issues, shown).values() for row in rows for i in row[C.IMAGE_ID]))


def _worst(issues: pd.DataFrame, shown: int) -> dict[str, list[pd.DataFrame]]:
    """issue -> its first `shown` rows of the page: a group or a pair each, or one image."""
    out = {}
    for issue in C.ISSUES:
        rows = issues[issues[C.ISSUE] == issue].sort_values(C.ISSUE_RANK)
        key = PAIRED.get(issue)
        if key is None:
            out[issue] = [rows.iloc[i : i + 1] for i in range(min(shown, len(rows)))]
        else:
            out[issue] = [g for _, g in rows.groupby(key, sort=False)][:shown]
    return out


def make_dataset_issues_section(found: DatasetIssues | None, views: Mapping[str, str], shown: int) -> dict[str, Any]:
    """The section's context; found None: the checks are off."""
    if found is None:
        return {"off": "The dataset checks are off (report_qa.enabled: false).", "counts": [], "issues": []}
    if found.refused:
        return {"off": found.refused, "counts": [], "issues": []}
    meta = found.meta
    sections, counts = [], []
    for issue, rows in _worst(found.issues, shown).items():
        flagged = found.issues[found.issues[C.ISSUE] == issue]
        key = PAIRED.get(issue)
        counts.append((TITLES[issue], flagged[C.IMAGE_ID].nunique(), flagged[key].nunique() if key else None))
        sections.append(
            {
                "title": TITLES[issue],
                "note": NOTES[issue],
                "rows": [_row(issue, g, views) for g in rows],
                "more": max(0, (flagged[key].nunique() if key else len(flagged)) - len(rows)),
            }
        )
    return {
        "off": None,
        "counts": counts,
        "issues": sections,
        "method": (
            f"Over {meta['n_images']} ok images. Near duplicates from the pixels: "
            f"{meta.get('near_duplicate_rule', '')} (measured: {meta['near_duplicate_measured']}). "
            f"The rest from the {meta['layer']} channel means minus their mean: similar scenes are mutual "
            f"nearest neighbours within {meta['similar_scene_ratio']} x the nearer distance to a second "
            f"neighbour (measured: {meta['similar_scene_measured']}); {meta['k']} neighbours per image "
            f"({meta['search']} search); {meta.get('outlier_rule', '')}. "
            f"cleanlab {meta['library']['cleanlab']}, scikit-learn {meta['library']['scikit-learn']}; "
            f"{meta['seconds']} s. Every flagged image: {C.DATASET_ISSUES}."
        ),
        "notes": list(meta.get("notes") or []),
    }


def _row(issue: str, g: pd.DataFrame, views: Mapping[str, str]) -> dict[str, Any]:
    first = g.iloc[0]
    if issue == C.ISSUE_EXACT_DUPLICATE:
        caption = f"group {int(first[C.GROUP])}: {len(g)} identical files"
    elif issue == C.ISSUE_NEAR_DUPLICATE:
        caption = f"pair {int(first[C.PAIR])}: pHashes differ in {int(first[C.HAMMING])} of 64 bits"
    elif issue == C.ISSUE_SIMILAR_SCENE:
        caption = f"pair {int(first[C.PAIR])}: distance ratio {first[C.DISTANCE_RATIO]:.2f}"
    elif issue == C.ISSUE_LABEL:
        caption = f"label quality {first[C.LABEL_SCORE]:.3f}"
    else:
        caption = f"outlier score {first[C.OUTLIER_SCORE]:.3f}"
    differ = bool(first[C.LABELS_DIFFER]) if pd.notna(first[C.LABELS_DIFFER]) else False
    return {
        "caption": caption + ("; labels differ" if differ else ""),
        "differ": differ,
        "images": [_image(r, views) for _, r in g.iterrows()],
    }


def _image(r: pd.Series, views: Mapping[str, str]) -> dict[str, Any]:
    image_id = r[C.IMAGE_ID]
    return {
        "image_id": image_id,
        "src": views.get(image_id),
        "href": card_link(image_id),
        "label": r[C.LABEL] if isinstance(r[C.LABEL], str) else "-",
        "pred": r[C.PRED] if isinstance(r[C.PRED], str) else "-",
    }


def card_link(image_id: str) -> str | None:
    """#image=<id> as explorer.js reads it (decodeURIComponent); None for an id that is not valid UTF-8."""
    try:
        return "#image=" + quote(image_id.encode("utf-8"), safe="")
    except UnicodeEncodeError:
        return None
