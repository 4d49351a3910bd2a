"""The report's charts, measured on their drawn geometry (not pixels): the driver scatter's names never overlap,
legends sit outside the data, the probability histograms' groups are opaque bars side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from analysis.store import contract
from reports.run import figures

CLASSES = ("cat", "dog")


def _stats(rng: np.random.Generator, n: int = 300) -> pd.DataFrame:
    """channel_stats-like rows of one layer: per class, every channel's AUC and mean contribution; the 12 top
    drivers of each class planted in one tight cluster, so that naive labels would pile onto each other."""
    rows = []
    for cls in CLASSES:
        auc = rng.uniform(0, 1, n)
        contrib = rng.normal(0, 1e-4, n)
        top = rng.choice(n, 12, replace=False)
        auc[top] = 0.7 + rng.normal(0, 0.004, 12)
        contrib[top] = 2e-3 + np.linspace(0, 1e-5, 12)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-contrib, kind="stable")] = np.arange(1, n + 1)
        for c in range(n):
            rows.append(
                {
                    contract.LAYER: "conv5_3",
                    contract.STAT: contract.STAT_MEAN,
                    contract.CLASS: cls,
                    contract.CHANNEL: c,
                    contract.AUC: auc[c],
                    contract.CONTRIB_MEAN: contrib[c],
                    contract.RANK_CONTRIBUTION: rank[c],
                    contract.RANK_SELECTIVITY: rank[c],
                    contract.COHENS_D: contrib[c] * 1e3,
                    contract.MEAN: auc[c],
                }
            )
    return pd.DataFrame(rows)


def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_driver_names_never_overlap_and_name_top_drivers():
    stats = _stats(np.random.default_rng(0))
    fig = _drawn(figures.plot_drivers(stats, "conv5_3", CLASSES, m=12))
    for ax, cls in zip(fig.axes, CLASSES):
        texts = [t for t in ax.texts if t.get_text()]
        boxes = [Text.get_window_extent(t) for t in texts]
        assert 3 <= len(texts) <= figures.DRIVER_LABELS  # fewer names than marked points, but some
        for i in range(len(boxes)):
            assert all(not _overlap(boxes[i], boxes[j]) for j in range(i)), [t.get_text() for t in texts]
            inside = ax.get_window_extent()
            assert inside.x0 <= boxes[i].x0 and boxes[i].x1 <= inside.x1 and inside.y0 <= boxes[i].y0
        # every name is one of the class's top drivers, by rank computed here
        c = stats[stats[contract.CLASS] == cls]
        best = {f"c{int(ch)}" for ch in c.nsmallest(figures.DRIVER_LABELS, contract.RANK_CONTRIBUTION).channel}
        assert {t.get_text() for t in texts} <= best


def _legend_clear_of_axes(fig):
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            if ax.get_visible():
                assert not _overlap(box, ax.get_window_extent()), (box, ax.get_window_extent())


def test_selectivity_legend_outside_the_data():
    stats = _stats(np.random.default_rng(1))
    fig = _drawn(figures.plot_selectivity_distribution(stats, ["conv5_3"], CLASSES))
    _legend_clear_of_axes(fig)


def test_probability_histograms_side_by_side_and_opaque():
    rng = np.random.default_rng(2)
    same = rng.uniform(0, 0.04, 30)  # both groups in the same first bin: the case that blended into brown
    probs = {c: {"cat": same, "dog": same.copy(), "empty": np.array([])} for c in CLASSES}
    fig = _drawn(figures.plot_probability_histograms(probs, "label"))
    _legend_clear_of_axes(fig)
    handles = fig.legends[0].legend_handles
    for ax in fig.axes[: len(CLASSES)]:
        bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
        assert bars and all(p.get_alpha() in (None, 1.0) for p in bars)
        spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in bars)
        assert all(a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:]))  # no bar covers another
        colours = {tuple(p.get_facecolor()) for p in bars}
        assert colours <= {tuple(h.get_facecolor()) for h in handles} and len(colours) == 2  # the legend's own
