"""The report's charts: each function returns a matplotlib Figure and never saves or shows it.

Figures are built with matplotlib.figure.Figure directly (no pyplot): no global state, nothing to close, no GUI
backend. Text from the data goes through `_text`, since matplotlib reads `$...$` as mathtext.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

from analysis.store import contract

_WIDTH = 7.0


def _text(value) -> str:
    return str(value).replace("$", r"\$")


def _legend_outside(fig: Figure, ax) -> None:
    """`ax`'s legend, one row above the panels, outside every data area (constrained layout makes room)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(handles), 6), fontsize=8, frameon=False)


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
        groups = list(probs[cls])
        if groups:  # the groups' bars side by side in each bin, opaque: no blend of two colours
            values = [np.asarray(probs[cls][g], dtype=np.float64) for g in groups]
            colours = [f"C{k}" for k in range(len(groups))]
            ax.hist(values, bins=bins, color=colours, label=[_text(f"{group_by} = {g}") for g in groups])
        ax.set_title(_text(f"P({cls})"))
        ax.set_yscale("log")
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    _legend_outside(fig, axes[0])
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
    _legend_outside(fig, ax)
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
    the zero line, "used but not selective" ones high near AUC 0.5. The top `m` drivers are marked, the first
    `DRIVER_LABELS` of them named, where a name fits without covering another (`_place_labels`)."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
    fig = Figure(figsize=(_WIDTH, 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(classes)), squeeze=False)[0])
    tops = []
    for ax, cls in zip(axes, classes):
        c = s[s[contract.CLASS] == cls].dropna(subset=[contract.CONTRIB_MEAN])
        ax.scatter(c[contract.AUC], c[contract.CONTRIB_MEAN], s=6, alpha=0.5, color="#4c72b0", linewidths=0)
        top = c.nsmallest(m, contract.RANK_CONTRIBUTION)
        ax.scatter(top[contract.AUC], top[contract.CONTRIB_MEAN], s=14, color="#d62728")
        tops.append(top)
        ax.axvline(0.5, color="#999", linewidth=0.8, linestyle="--")
        ax.axhline(0.0, color="#999", linewidth=0.8, linestyle="--")
        ax.set_title(f"{_text(layer)}: {_text(cls)} (red: top {len(top)} drivers)", fontsize=9)
        ax.set_xlabel("ROC AUC (selectivity)")
    axes[0].set_ylabel("mean contribution to the logit")
    fig.draw_without_rendering()  # the layout settles first: the names are placed in its pixels
    for ax, top in zip(axes, tops):
        xy = top[[contract.AUC, contract.CONTRIB_MEAN]].to_numpy(dtype=np.float64)
        _place_labels(ax, xy, [f"c{int(c)}" for c in top[contract.CHANNEL]][:DRIVER_LABELS])
    return fig


DRIVER_LABELS = 5  # names per class on the driver scatter; the channel browser lists every channel
# Where a name may go, in points from its dot, nearest first: (dx, dy, horizontal, vertical alignment).
_SPOTS = tuple(
    (r * dx, r * dy, {1: "left", 0: "center", -1: "right"}[dx], {1: "bottom", 0: "center", -1: "top"}[dy])
    for r in (4, 12, 24)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
)


def _place_labels(ax, xy: np.ndarray, names: Sequence[str]) -> None:
    """Names xy[i] with names[i], each at the first of `_SPOTS` where its box stays inside the axes and overlaps no
    name placed before it and no dot of `xy`; a name with no such spot is left out. Needs a settled layout."""
    inside = ax.get_window_extent()
    dots = [(x - 3, y - 3, x + 3, y + 3) for x, y in ax.transData.transform(xy)] if len(xy) else []
    placed: list[tuple[float, float, float, float]] = []
    for i, name in enumerate(names):
        for dx, dy, ha, va in _SPOTS:
            shift = ScaledTranslation(dx / 72, dy / 72, ax.figure.dpi_scale_trans)  # points to inches
            trial = ax.text(*xy[i], name, fontsize=7, ha=ha, va=va, transform=ax.transData + shift)
            b = trial.get_window_extent()
            trial.remove()
            box = (b.x0 - 1, b.y0 - 1, b.x1 + 1, b.y1 + 1)
            fits = inside.x0 <= box[0] and box[2] <= inside.x1 and inside.y0 <= box[1] and box[3] <= inside.y1
            if fits and not any(_overlap(box, o) for o in placed + dots):
                placed.append(box)
                far = abs(dx) + abs(dy) > 6  # a leader line from a name set further off to its dot
                line = {"arrowstyle": "-", "color": "#777", "linewidth": 0.5, "shrinkB": 3} if far else None
                ax.annotate(
                    name,
                    tuple(xy[i]),
                    (dx, dy),
                    textcoords="offset points",
                    ha=ha,
                    va=va,
                    fontsize=7,
                    in_layout=False,
                    arrowprops=line,
                )
                break


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
