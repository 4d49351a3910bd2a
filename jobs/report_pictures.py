"""The report's pictures, written under OUT/report with names made from numbers, never from the data: the overlay
tiles of the shown images (the model re-run on them only), every ok image's thumbnail in sprite sheets, the figures.
Called by jobs/report.py; each returns the paths relative to the page.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.data.discovery import DataError
from analysis.data.preprocessing import make_preprocessing
from analysis.stats import selectivity as statistics
from analysis.stats import topk
from analysis.stats.recompute import (RecomputeError, check_means, compute_shown_maps, load_run_model,
                                      read_run_config)
from analysis.store import contract, tables
from jobs import runtime
from jobs.config import ReportConfig
from reports.encode import encode_jpeg, encode_png
from reports.run import figures, gallery, thumbs
from reports.run.page import Overlays

log = logging.getLogger("cnn_blackbox")
THUMB_QUALITY = 75   # of the sprite sheets: see benchmarks/bench_report.py for the bytes per thumbnail


def draw_overlays(cfg: ReportConfig, run: Path, meta: dict, examples: pd.DataFrame, out: Path,
                  also: list[str] = ()) -> Overlays:
    """Re-run the model on each shown image once, for all the channels it is shown with; write the tiles. `also`:
    images shown without channels (the dataset checks' worst cases), for their thumbnails."""
    needs = {**{image_id: {} for image_id in also}, **gallery.list_needs(examples)}
    recorded = {(i, layer, int(c)): float(v) for i, layer, c, v in
                zip(examples[contract.IMAGE_ID], examples[contract.LAYER], examples[contract.CHANNEL],
                    examples[contract.VALUE])}
    device = runtime.pick_device(cfg.device)
    precision = meta.get("precision", "fp32")
    runtime.use_exact_fp32(device, precision)   # the re-run's means are checked against the run's fp32 values
    try:
        rm = load_run_model(run, meta)
        log.info("overlays: re-running %d shown images on %s (%s)", len(needs), device, precision)
        shown = compute_shown_maps(rm, needs, device, precision, cfg.batch_size, cfg.thumbnail,
                                   gradcam=gallery.list_gradcam_classes(examples))
    except RecomputeError as e:
        log.warning("no overlays: %s", e)
        return Overlays({}, {}, {}, [], 0, f"No overlays: {e}")
    scales = gallery.compute_channel_scales(shown)
    tiles = gallery.make_tiles(shown, scales, cfg.colormap, cfg.alpha)
    number = {item.image_id: n for n, item in enumerate(shown)}
    for pattern in ("conv*-c*-*.jpg", "gradcam-*.jpg", "view-*.jpg"):  # an earlier report's tiles, never the user's files
        for stale in (out / "tiles").glob(pattern):
            stale.unlink()
    paths = {}
    for (image_id, layer, channel), tile in tiles.items():
        name = f"tiles/{layer}-c{channel}-{number[image_id]:05d}.jpg"  # never the file name from the data
        tables.write_bytes_atomic(encode_jpeg(tile), out / name)
        paths[(image_id, layer, channel)] = name
    views = {}
    for item in shown:                      # the crop the network saw, plain: the image cards' thumbnails
        if item.view is not None:
            views[item.image_id] = f"tiles/view-{number[item.image_id]:05d}.jpg"
            tables.write_bytes_atomic(encode_jpeg(item.view), out / views[item.image_id])
    cams: dict[str, list[tuple[str, str, float]]] = {}
    for (image_id, cls), (tile, vmax) in gallery.make_gradcam_tiles(shown, cfg.colormap, cfg.alpha).items():
        name = f"tiles/gradcam-{number[image_id]:05d}-{len(cams.get(image_id, []))}.jpg"
        tables.write_bytes_atomic(encode_jpeg(tile), out / name)
        cams.setdefault(image_id, []).append((cls, name, vmax))
    mismatches = check_means(shown, recorded, precision)
    checked = sum(len(chans) for item in shown for chans in item.maps.values())
    for m in mismatches:
        log.warning("recomputed mean differs: %s %s c%d recorded %.5f, now %.5f", m["image_id"], m["layer"],
                    m["channel"], m["recorded"], m["recomputed"])
    unreadable = {item.image_id: item.error for item in shown if item.error}
    notes = list(rm.notes) + ([f"{len(unreadable)} shown images could not be re-run"] if unreadable else [])
    return Overlays(paths, scales, unreadable, mismatches, checked, "; ".join(notes) or None, cams, cfg.colormap,
                    views)


def write_thumbnails(cfg: ReportConfig, run: Path, out: Path, image_ids: list[str]) -> dict:
    """Every ok image's thumbnail, cell k of OUT/report/thumbs/sheet-<k // PER_SHEET>.jpg (names from numbers only);
    returns the page's index of them, with why an image (or the whole run) has none."""
    t0 = time.perf_counter()
    for stale in (out / "thumbs").glob("sheet-*.jpg"):   # an earlier report's sheets, never the user's files
        stale.unlink()
    index = {"size": cfg.image_thumbnails, "columns": thumbs.COLUMNS, "per_sheet": thumbs.PER_SHEET, "sheets": [],
             "missing": {}, "note": None}
    try:
        ext = read_run_config(run)
        pre = make_preprocessing(ext["preprocess"], int(ext["image_size"]))
        source = thumbs.read_source(str(ext["data"]), int(ext["max_file_bytes"]), int(ext["max_image_pixels"]),
                                    pre.crop / pre.resize)
    except (RecomputeError, DataError, KeyError, TypeError, ValueError) as e:
        log.warning("no thumbnails: %s", e)
        return {**index, "note": f"No thumbnails: the run's images cannot be read now ({e})."}
    chunks = thumbs.read_thumbnails(source, image_ids, cfg.image_thumbnails, runtime.count_cores())
    total = -(-len(image_ids) // thumbs.PER_SHEET)
    for k, chunk in enumerate(tqdm(chunks, desc="thumbnails", unit="sheet", total=total, disable=not cfg.progress,
                                   file=sys.stderr)):
        index["missing"].update({str(k * thumbs.PER_SHEET + j): got for j, got in enumerate(chunk)
                                 if isinstance(got, str)})
        sheet = thumbs.make_sheet([None if isinstance(g, str) else g for g in chunk], cfg.image_thumbnails)
        index["sheets"].append(f"thumbs/sheet-{k:05d}.jpg")
        tables.write_bytes_atomic(encode_jpeg(sheet, quality=THUMB_QUALITY), out / index["sheets"][-1])
    log.info("thumbnails: %d images in %d sheets, %d without one, %.1f s", len(image_ids), len(index["sheets"]),
             len(index["missing"]), time.perf_counter() - t0)
    return index


def write_figures(out: Path, meta: dict, predictions: pd.DataFrame, groups: statistics.Groups,
                  stats: pd.DataFrame, layers: list[str], m: int) -> dict:
    """Render every chart to out/figures/*.png; returns their paths relative to the page."""
    def save(fig, name: str) -> str:
        tables.write_bytes_atomic(encode_png(fig), out / "figures" / f"{name}.png")
        return f"figures/{name}.png"

    classes = list(groups.classes)
    ok = predictions[predictions[contract.STATUS] == contract.STATUS_OK]
    column = ok[contract.LABEL] if groups.by == contract.GROUP_LABEL else ok[contract.PRED]
    counts = {c: int((column == c).sum()) for c in classes}
    errors = predictions[contract.ERROR].dropna().value_counts().to_dict()
    labeled = ok[ok[contract.LABEL].isin(classes) & ok[contract.PRED].isin(classes)]
    matrix = pd.crosstab(pd.Categorical(labeled[contract.LABEL], classes), pd.Categorical(labeled[contract.PRED],
                                                                                          classes),
                         dropna=False).to_numpy()
    acc = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else None
    probs = {c: {g: ok.loc[column == g, contract.prob_column(c)].dropna().to_numpy() for g in classes} for c in classes}
    figs = {"quality": save(figures.plot_data_quality(counts, errors), "quality"),
            "classification": [(save(figures.plot_probability_histograms(probs, groups.by), "probabilities"),
                                 "probability histograms per class")],
            "selectivity": save(figures.plot_selectivity_distribution(stats, list(meta["layers"]), classes),
                                "selectivity"),
            "layers": {}}
    if groups.by == contract.GROUP_LABEL:
        figs["classification"].insert(0, (save(figures.plot_confusion(matrix, classes, acc), "confusion"),
                                          "confusion matrix"))
    for layer in layers:
        selected = topk.select_channels(stats, layer, classes, m)
        union = list(dict.fromkeys(c for chans in selected.values() for c in chans))
        figs["layers"][layer] = [
            (save(figures.plot_top_channels(stats, layer, classes, m), f"top-{layer}"), f"top channels of {layer}"),
            (save(figures.plot_class_means(stats, layer, union, classes), f"means-{layer}"), f"class means, {layer}")]
        if layer in ((meta.get("attribution") or {}).get("layers") or ()):
            figs["layers"][layer].append((save(figures.plot_drivers(stats, layer, classes, m), f"drivers-{layer}"),
                                          f"selectivity against contribution, {layer}"))
    return figs
