"""The report's charts: each function returns a matplotlib Figure and never saves or shows it.

Figures are built with matplotlib.figure.Figure directly (no pyplot): no global state, nothing to close, no GUI
backend. Text from the data goes through `_text`, since matplotlib reads `$...$` as mathtext.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.store import contract

_WIDTH = 7.0


def _text(value) -> str:
    return str(value).replace("$", r"\$")


def plot_data_quality(classes: Mapping[str, int], errors: Mapping[str, int]) -> Figure:
    """Images per class (or per predicted class) and decode errors by reason."""
    fig = Figure(figsize=(_WIDTH, 2.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    names = list(classes) or ["(none)"]
    left.bar([_text(n) for n in names], [classes.get(n, 0) for n in names], color="#4c72b0")
    left.set_title("images per class")
    left.tick_params(axis="x", labelrotation=30)
    if errors:
        reasons = list(errors)
        right.barh([_text(r) for r in reasons], [errors[r] for r in reasons], color="#c44e52")
        right.invert_yaxis()
    else:
        right.text(0.5, 0.5, "no decode errors", ha="center", va="center", transform=right.transAxes)
        right.set_xticks([])
        right.set_yticks([])
    right.set_title("errors by reason")
    return fig


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], accuracy: float | None) -> Figure:
    """(K, K) counts, rows true class, columns predicted."""
    fig = Figure(figsize=(3.2 + 0.4 * len(classes), 2.8 + 0.3 * len(classes)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [_text(c) for c in classes], rotation=30)
    ax.set_yticks(ticks, [_text(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(int(n)), ha="center", va="center", color="white" if n > top / 2 else "black")
    ax.set_title("confusion" + (f" (accuracy {accuracy:.1%})" if accuracy is not None else ""))
    return fig


def plot_probability_histograms(probs: Mapping[str, Mapping[str, np.ndarray]], group_by: str) -> Figure:
    """probs[c][g]: P(c) on the images of group g; one panel per class c."""
    classes = list(probs)
    fig = Figure(figsize=(_WIDTH, 2.4 * max(1, (len(classes) + 1) // 2)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(max(1, (len(classes) + 1) // 2), 2 if len(classes) > 1 else 1)).ravel()
    bins = np.linspace(0, 1, 21)
    for ax, cls in zip(axes, classes):
        for group, values in probs[cls].items():
            ax.hist(values, bins=bins, alpha=0.6, label=_text(f"{group_by} = {group}"))
        ax.set_title(_text(f"P({cls})"))
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    return fig


def plot_selectivity_distribution(stats: pd.DataFrame, layers: Sequence[str], classes: Sequence[str]) -> Figure:
    """ROC AUC of every channel (channel means) per layer, one box per class."""
    s = stats[stats[contract.STAT] == contract.STAT_MEAN]
    fig = Figure(figsize=(_WIDTH + 2, 3.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(classes))
    for k, cls in enumerate(classes):
        data = [
            s[(s[contract.LAYER] == layer) & (s[contract.CLASS] == cls)][contract.AUC].dropna().to_numpy()
            for layer in layers
        ]
        pos = np.arange(len(layers)) + (k - (len(classes) - 1) / 2) * width
        box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
        for patch in box["boxes"]:
            patch.set_facecolor(f"C{k}")
        ax.plot([], [], color=f"C{k}", label=_text(cls), linewidth=6)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(np.arange(len(layers)), [_text(layer) for layer in layers], rotation=30)
    ax.set_ylabel("ROC AUC (class vs rest)")
    ax.set_title("selectivity of every channel, per layer")
    ax.legend(fontsize=8)
    return fig


def plot_top_channels(stats: pd.DataFrame, layer: str, classes: Sequence[str], m: int) -> Figure:
    """Per class, its m most selective channels of `layer` as bars of Cohen's d, labeled with the AUC."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
    fig = Figure(figsize=(_WIDTH, 0.4 + 0.28 * m * ((len(classes) + 1) // 2)), layout="constrained")
    axes = np.atleast_1d(fig.subplots((len(classes) + 1) // 2, 2 if len(classes) > 1 else 1)).ravel()
    for k, (ax, cls) in enumerate(zip(axes, classes)):
        top = s[s[contract.CLASS] == cls].sort_values(contract.RANK_SELECTIVITY).head(m)
        d = np.nan_to_num(top[contract.COHENS_D].to_numpy(), posinf=0.0, neginf=0.0)
        ax.barh([f"c{c}" for c in top[contract.CHANNEL]], d, color=f"C{k}")
        for i, auc in enumerate(top[contract.AUC]):
            ax.text(0, i, f" AUC {auc:.2f}", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("Cohen's d")
        ax.set_title(_text(f"{layer}: most selective for {cls}"), fontsize=9)
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    return fig


def plot_class_means(stats: pd.DataFrame, layer: str, channels: Sequence[int], classes: Sequence[str]) -> Figure:
    """Heatmap of class means (rows classes, columns channels) for `channels` of `layer`."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
    s = s.set_index([contract.CLASS, contract.CHANNEL])
    values = np.array([[s.loc[(cls, c), contract.MEAN] for c in channels] for cls in classes], dtype=np.float64)
    fig = Figure(figsize=(min(14.0, 1.5 + 0.45 * len(channels)), 1.2 + 0.4 * len(classes)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(np.arange(len(channels)), [f"c{c}" for c in channels], rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(classes)), [_text(c) for c in classes])
    ax.set_title(_text(f"{layer}: mean activation per class of the top channels"), fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return fig


def plot_drivers(stats: pd.DataFrame, layer: str, classes: Sequence[str], m: int) -> Figure:
    """Each channel a dot at (AUC, mean contribution to the class): "selective but unused" channels sit right on
    the zero line, "used but not selective" ones high near AUC 0.5. The top `m` drivers are labelled."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
    fig = Figure(figsize=(_WIDTH, 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(classes)), squeeze=False)[0])
    for ax, cls in zip(axes, classes):
        c = s[s[contract.CLASS] == cls].dropna(subset=[contract.CONTRIB_MEAN])
        ax.scatter(c[contract.AUC], c[contract.CONTRIB_MEAN], s=6, alpha=0.5, color="#4c72b0", linewidths=0)
        top = c.nsmallest(m, contract.RANK_CONTRIBUTION)
        ax.scatter(top[contract.AUC], top[contract.CONTRIB_MEAN], s=14, color="#d62728")
        for _, r in top.iterrows():
            ax.annotate(
                f"c{int(r[contract.CHANNEL])}",
                (r[contract.AUC], r[contract.CONTRIB_MEAN]),
                fontsize=7,
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.axvline(0.5, color="#999", linewidth=0.8, linestyle="--")
        ax.axhline(0.0, color="#999", linewidth=0.8, linestyle="--")
        ax.set_title(f"{_text(layer)}: {_text(cls)}", fontsize=9)
        ax.set_xlabel("ROC AUC (selectivity)")
    axes[0].set_ylabel("mean contribution to the logit")
    return fig
