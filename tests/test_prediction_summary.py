"""The prediction summary against counts made by hand: per class, errors by reason, the labeled images' accuracy
(the page's) and the confusion matrix's (the figure's)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.summary import compute_accuracy, compute_prediction_summary
from analysis.store import contract

OK, ERR = contract.STATUS_OK, contract.STATUS_ERROR
ROWS = [  # status, label, pred, error
    (OK, "cat", "cat", None),
    (OK, "cat", "dog", None),
    (OK, "dog", "dog", None),
    (OK, "bird", "cat", None),  # a label outside the classes: not labeled
    (OK, None, "dog", None),  # no label
    (OK, "dog", "fox", None),  # a prediction outside the classes: labeled, but not in the matrix
    (ERR, "cat", None, "truncated"),
    (ERR, None, None, "truncated"),
    (ERR, None, None, "not an image"),
]


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            contract.IMAGE_ID: [f"{i}.jpg" for i in range(len(ROWS))],
            contract.STATUS: [r[0] for r in ROWS],
            contract.LABEL: [r[1] for r in ROWS],
            contract.PRED: [r[2] for r in ROWS],
            contract.ERROR: [r[3] for r in ROWS],
        }
    )


def test_counts_errors_and_both_accuracies():
    s = compute_prediction_summary(_predictions(), ("cat", "dog"), contract.GROUP_LABEL)
    assert (s.found, s.ok, s.labeled, s.correct) == (9, 6, 4, 2)
    assert s.counts == {"cat": 2, "dog": 2}
    assert list(s.errors.items()) == [("truncated", 2), ("not an image", 1)]  # the most frequent first
    assert s.matrix.tolist() == [[1, 1], [0, 1]]
    assert s.accuracy == 0.5 and s.matrix_accuracy == 2 / 3
    by_pred = compute_prediction_summary(_predictions(), ("cat", "dog"), contract.GROUP_PRED)
    assert by_pred.counts == {"cat": 2, "dog": 3}


def test_no_labels_no_accuracy():
    p = _predictions()
    p[contract.LABEL] = None
    s = compute_prediction_summary(p, ("cat", "dog"), contract.GROUP_PRED)
    assert s.labeled == 0 and s.accuracy is None and s.matrix_accuracy is None and s.matrix.sum() == 0


def test_accuracy_equals_the_mean_of_right_answers_bit_for_bit():
    rng = np.random.default_rng(0)
    for n in rng.integers(1, 100_000, 200):
        right = rng.random(n) < rng.random()
        assert compute_accuracy(int(right.sum()), int(n)) == float(right.mean())
