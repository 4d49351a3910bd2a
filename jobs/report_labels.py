"""The report's labels: the run's, or a CSV's given to the report (no extract again), put on the predictions frame
once, with a record of where they came from for the page and the tables' metadata."""

from __future__ import annotations

import hashlib
import logging

import pandas as pd

from analysis.data.labels import match_labels, read_labels_csv
from analysis.stats import relabel
from analysis.store import contract
from jobs import cli

log = logging.getLogger("cnn_blackbox")


def read_labels(csv: str | None, predictions: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, dict]:
    """The predictions with the labels this report uses: a CSV given to it (images it does not name keep the run's
    label), else the run's own. Also what the report's tables and page record about them, so that no output is
    ever read as computed from other labels."""
    classes = tuple(meta["classes"])
    record: dict = {"source": "run", "csv": (meta.get("data") or {}).get("labels_csv")}
    if csv is not None:
        cli.check_utf8_path("--labels", csv)
        given = read_labels_csv(csv)
        matched, unmatched = match_labels(given, predictions[contract.IMAGE_ID])
        predictions, changed = relabel.relabel_predictions(predictions, matched, classes)
        with open(csv, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        record = {
            "source": "report",
            "csv": csv,
            "sha256": digest,
            "ids": len(given),
            "matched": len(matched),
            "changed": changed,
            "unmatched": unmatched[: relabel.SHOWN],
            "unmatched_count": len(unmatched),
        }
        log.info(
            "labels from %s: %d of its %d ids match an image; %d labels changed", csv, len(matched), len(given), changed
        )
        if unmatched:
            log.warning("%s", relabel.describe_unmatched(csv, unmatched))
    record["outside_classes"] = relabel.count_outside_classes(predictions, classes)
    if record["outside_classes"]:
        log.warning("%s", relabel.describe_outside_classes(record["outside_classes"], classes))
    return predictions, record
