"""The report's pictures, written under OUT/report with names made from numbers, never from the data: the overlay
tiles of the shown images (the model re-run on them only), every ok image's thumbnail in sprite sheets, the image
cards' Grad-CAM and contributions in script files, the figures. Called by jobs/report.py; each returns the paths
relative to the page.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis.data.discovery import DataError
from analysis.stats import card_maps, topk
from analysis.stats.recompute import RecomputeError, check_means, compute_shown_maps, load_run_model
from analysis.stats.summary import PredictionSummary
from analysis.store import contract, tables
from analysis.store.run import FinishedRun, RunSourceError
from jobs import runtime
from jobs.config import ReportConfig
from reports.encode import encode_jpeg, encode_png
from reports.run import cards, figures, gallery, thumbs
from reports.run.concepts import index_image_concepts
from reports.run.inputs import Overlays

log = logging.getLogger("cnn_blackbox")
THUMB_QUALITY = 75  # of the sprite sheets: see benchmarks/bench_report.py for the bytes per thumbnail


def draw_overlays(
    cfg: ReportConfig, run: FinishedRun, examples: pd.DataFrame, out: Path, also: list[str] = ()
) -> Overlays:
    """Re-run the model on each shown image once, for all the channels it is shown with; write the tiles. `also`:
    images shown without channels (the dataset checks' worst cases), for their thumbnails."""
    needs = {**{image_id: {} for image_id in also}, **gallery.list_needs(examples)}
    recorded = {
        (i, layer, int(c)): float(v)
        for i, layer, c, v in zip(
            examples[contract.IMAGE_ID], examples[contract.LAYER], examples[contract.CHANNEL], examples[contract.VALUE]
        )
    }
    device = runtime.pick_device(cfg.device)
    precision = run.meta.get("precision", "fp32")
    runtime.use_exact_fp32(device, precision)  # the re-run's means are checked against the run's fp32 values
    try:
        rm = load_run_model(run)
        log.info("overlays: re-running %d shown images on %s (%s)", len(needs), device, precision)
        shown = compute_shown_maps(rm, needs, device, precision, cfg.batch_size, cfg.thumbnail)
    except RecomputeError as e:
        log.warning("no overlays: %s", e)
        return Overlays.empty(f"No overlays: {e}")
    scales = gallery.compute_channel_scales(shown)
    tiles = gallery.make_tiles(shown, scales, cfg.colormap, cfg.alpha)
    number = {item.image_id: n for n, item in enumerate(shown)}
    # An earlier report's tiles, never the user's files.
    for pattern in ("conv*-c*-*.jpg", "gradcam-*.jpg", "view-*.jpg"):
        for stale in (out / "tiles").glob(pattern):
            stale.unlink()
    paths = {}
    for (image_id, layer, channel), tile in tiles.items():
        name = f"tiles/{layer}-c{channel}-{number[image_id]:05d}.jpg"  # never the file name from the data
        tables.write_bytes_atomic(encode_jpeg(tile), out / name)
        paths[(image_id, layer, channel)] = name
    views = {}
    for item in shown:  # the crop the network saw, plain: the image cards' thumbnails
        if item.view is not None:
            views[item.image_id] = f"tiles/view-{number[item.image_id]:05d}.jpg"
            tables.write_bytes_atomic(encode_jpeg(item.view), out / views[item.image_id])
    mismatches = check_means(shown, recorded, precision)
    checked = sum(len(chans) for item in shown for chans in item.maps.values())
    for m in mismatches:
        log.warning(
            "recomputed mean differs: %s %s c%d recorded %.5f, now %.5f",
            m["image_id"],
            m["layer"],
            m["channel"],
            m["recorded"],
            m["recomputed"],
        )
    unreadable = {item.image_id: item.error for item in shown if item.error}
    notes = list(rm.notes) + ([f"{len(unreadable)} shown images could not be re-run"] if unreadable else [])
    return Overlays(paths, scales, unreadable, mismatches, checked, "; ".join(notes) or None, cfg.colormap, views)


def write_thumbnails(cfg: ReportConfig, run: FinishedRun, out: Path, image_ids: list[str]) -> dict:
    """Every ok image's thumbnail, cell k of OUT/report/thumbs/sheet-<k // PER_SHEET>.jpg (names from numbers only);
    returns the page's index of them, with why an image (or the whole run) has none."""
    t0 = time.perf_counter()
    for stale in (out / "thumbs").glob("sheet-*.jpg"):  # an earlier report's sheets, never the user's files
        stale.unlink()
    index = {
        "size": cfg.image_thumbnails,
        "columns": thumbs.COLUMNS,
        "per_sheet": thumbs.PER_SHEET,
        "sheets": [],
        "missing": {},
        "note": None,
    }
    try:
        pre = run.source.preprocessing
        run.images.find()  # DATA listed once per report: the overlays' re-run may have done it already
    except (RunSourceError, DataError) as e:
        log.warning("no thumbnails: %s", e)
        return {**index, "note": f"No thumbnails: the run's images cannot be read now ({e})."}
    chunks = thumbs.read_thumbnails(
        run.images, image_ids, cfg.image_thumbnails, pre.crop / pre.resize, runtime.count_cores()
    )
    total = -(-len(image_ids) // thumbs.PER_SHEET)
    for k, chunk in enumerate(
        tqdm(chunks, desc="thumbnails", unit="sheet", total=total, disable=not cfg.progress, file=sys.stderr)
    ):
        index["missing"].update(
            {str(k * thumbs.PER_SHEET + j): got for j, got in enumerate(chunk) if isinstance(got, str)}
        )
        sheet = thumbs.make_sheet([None if isinstance(g, str) else g for g in chunk], cfg.image_thumbnails)
        index["sheets"].append(f"thumbs/sheet-{k:05d}.jpg")
        tables.write_bytes_atomic(encode_jpeg(sheet, quality=THUMB_QUALITY), out / index["sheets"][-1])
    log.info(
        "thumbnails: %d images in %d sheets, %d without one, %.1f s",
        len(image_ids),
        len(index["sheets"]),
        len(index["missing"]),
        time.perf_counter() - t0,
    )
    return index


def write_cards(run: Path, meta: dict, out: Path, image_ids: list[str], concepts=None) -> dict:
    """OUT/report/cards/part-NNNNN.js: every map row's Grad-CAM per class and top contributing channels, and its
    concepts per class where the concept stage ran (concepts: its ConceptResult), PER_PART rows a file
    (reports/run/cards.py); returns the page's index of them, or why there are none."""
    for stale in (out / contract.CARDS_DIR).glob("part-*.js"):  # an earlier report's parts, never the user's files
        stale.unlink()
    note = card_maps.describe_missing(run, meta)
    if note:
        log.info("%s", note)
        return cards.make_cards_index([], None, note)
    t0 = time.perf_counter()
    maps = card_maps.read_card_maps(run, meta, image_ids)
    parts, size = [], 0
    found = None if concepts is None or concepts.images.empty else concepts.images
    per_image = index_image_concepts(found, image_ids, maps.classes) if found is not None else None
    for first, text in cards.make_card_parts(maps, image_ids, per_image):
        parts.append(cards.part_name(first))
        tables.write_bytes_atomic(text.encode("ascii"), out / parts[-1])  # script_json: ASCII only
        size += len(text)
    log.info(
        "image cards: Grad-CAM of %d classes at %s for %d images in %d files, %.0f bytes an image, %.1f s",
        len(maps.classes),
        maps.layer,
        len(image_ids),
        len(parts),
        size / max(1, len(image_ids)),
        time.perf_counter() - t0,
    )
    return cards.make_cards_index(parts, maps)


def write_figures(
    out: Path,
    meta: dict,
    predictions: pd.DataFrame,
    summary: PredictionSummary,
    stats: pd.DataFrame,
    layers: list[str],
    m: int,
) -> dict:
    """Render every chart to out/figures/*.png; returns their paths relative to the page. The probability histograms
    read `predictions`; the counts, errors and confusion matrix come from `summary`."""

    def save(fig, name: str) -> str:
        tables.write_bytes_atomic(encode_png(fig), out / "figures" / f"{name}.png")
        return f"figures/{name}.png"

    classes = list(summary.classes)
    ok = predictions[predictions[contract.STATUS] == contract.STATUS_OK]
    column = ok[contract.LABEL] if summary.group_by == contract.GROUP_LABEL else ok[contract.PRED]
    probs = {c: {g: ok.loc[column == g, contract.prob_column(c)].dropna().to_numpy() for g in classes} for c in classes}
    figs = {
        "quality": save(figures.plot_data_quality(summary.counts, summary.errors), "quality"),
        "classification": [
            (
                save(figures.plot_probability_histograms(probs, summary.group_by), "probabilities"),
                "probability histograms per class",
            )
        ],
        "selectivity": save(figures.plot_selectivity_distribution(stats, list(meta["layers"]), classes), "selectivity"),
        "layers": {},
    }
    if summary.group_by == contract.GROUP_LABEL:
        figs["classification"].insert(
            0,
            (
                save(figures.plot_confusion(summary.matrix, classes, summary.matrix_accuracy), "confusion"),
                "confusion matrix",
            ),
        )
    for layer in layers:
        selected = topk.select_channels(stats, layer, classes, m)
        union = list(dict.fromkeys(c for chans in selected.values() for c in chans))
        figs["layers"][layer] = [
            (save(figures.plot_top_channels(stats, layer, classes, m), f"top-{layer}"), f"top channels of {layer}"),
            (save(figures.plot_class_means(stats, layer, union, classes), f"means-{layer}"), f"class means, {layer}"),
        ]
        if layer in ((meta.get("attribution") or {}).get("layers") or ()):
            figs["layers"][layer].append(
                (
                    save(figures.plot_drivers(stats, layer, classes, m), f"drivers-{layer}"),
                    f"selectivity against contribution, {layer}",
                )
            )
    return figs
