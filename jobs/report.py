"""Report: rank channels per class, show their top-activating images with overlays, write the HTML summary.

    python -m jobs.report --run OUT [--out DIR] [--layers conv5_3,conv4_3] [--config YAML] [--set key=value]
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.store import contract, tables
from analysis.store import manifest
from analysis.stats import cards, checks, drivers, embedding, histograms
from analysis.stats import selectivity as statistics
from analysis.stats import topk
from analysis.config import ConfigError
from jobs.config import ReportConfig
from analysis.stats.recompute import (RecomputeError, check_means, compute_shown_maps, load_run_model,
                                      read_run_config)
from analysis.data.discovery import DataError
from analysis.data.preprocessing import make_preprocessing
from jobs import cli, runtime
from reports.encode import encode_jpeg, encode_png
from reports.run import figures, gallery, thumbs
from reports.run import checks as qa_section
from reports.run.explorer import make_explorer
from reports.run.html import render_page
from reports.run.page import Overlays, make_context

log = logging.getLogger("cnn_blackbox")
THUMB_QUALITY = 75   # of the sprite sheets: see benchmarks/bench_report.py for the bytes per thumbnail


def main(cfg: ReportConfig) -> int:
    t0 = time.perf_counter()
    run, meta = Path(cfg.run), read_finished_run(cfg.run)
    out = tables.report_dir(run, cfg.out)
    cli.check_utf8_path("--out", out)
    layers = check_layers(cfg.layers, meta)
    if cfg.qa.enabled:
        check_layers((cfg.qa.layer,), meta, "report_qa.layer")
    classes = tuple(meta["classes"])

    # 1. Statistics of every channel of every layer, streamed from the Parquet; ranked per class.
    predictions = tables.read_predictions(run, classes)
    groups = statistics.make_groups(predictions, classes)
    log.info("statistics over %d images grouped by %s, %d layers", len(groups.code), groups.by, len(meta["layers"]))
    threads = runtime.count_cores()
    stats = pd.concat([statistics.compute_channel_stats(run, {layer: channels}, groups, cfg.stats_memory_mb, threads)
                       for layer, channels in tqdm(meta["layers"].items(), desc="statistics", unit="layer",
                                                   disable=not cfg.progress, file=sys.stderr)], ignore_index=True)
    # ... and the drivers: channels ranked by their contribution to each class logit, where the run attributed.
    stats = drivers.add_drivers(stats, drivers.compute_drivers(run, meta.get("attribution"), groups,
                                                               drivers.make_pred_groups(predictions, classes)))
    tables.write_table(stats, contract.CHANNEL_STATS_SCHEMA, out / contract.CHANNEL_STATS)

    # 2. Top-activating images of the most selective channels, and the most confident mistakes.
    mistakes = topk.find_mistakes(predictions, groups, cfg.mistakes)
    examples = topk.compute_top_examples(run, layers, stats, groups, predictions, mistakes, cfg.top_channels,
                                         cfg.top_images)
    tables.write_table(examples, contract.TOP_EXAMPLES_SCHEMA, out / contract.TOP_EXAMPLES)

    # 3. Dataset checks: exact and near duplicates, likely label errors, outliers (report_qa).
    dataset_checks = run_checks(cfg.qa, run, predictions, classes, out)
    worst = qa_section.list_worst(dataset_checks.issues, cfg.qa.shown) if dataset_checks else []

    # 4. Overlays: the model re-run on the shown images only (and the checks' worst cases, for their thumbnails),
    #    their means checked against the Parquet.
    overlays = draw_overlays(cfg, run, meta, examples, out, worst) if cfg.overlays else Overlays(
        {}, {}, {}, [], 0, "Overlays are off (report.overlays: false).")

    # 5. Figures, then the page.
    figs = write_figures(out, meta, predictions, groups, stats, layers, cfg.top_channels)
    wrong = drivers.compute_mistake_drivers(run, meta.get("attribution"),
                                            examples[examples[contract.SCOPE] == contract.SCOPE_MISTAKE])
    hists = histograms.compute_histograms(run, meta["layers"], groups, cfg.stats_memory_mb << 20)
    explorer = make_explorer_data(cfg, run, out, meta, predictions, groups, stats, examples, layers, overlays)
    context = make_context(meta, run, out, predictions, groups.by, stats, examples, overlays, figs, layers,
                           cfg.top_channels, cfg.note, time.perf_counter() - t0, wrong, hists, explorer,
                           qa_section.make_checks_section(dataset_checks, overlays.views, cfg.qa.shown))
    tables.write_bytes_atomic(render_page(context).encode("utf-8"), out / contract.INDEX_HTML)
    log.info("report written in %.1f s: %s", time.perf_counter() - t0, (out / contract.INDEX_HTML).resolve())
    return 0


def make_explorer_data(cfg: ReportConfig, run: Path, out: Path, meta: dict, predictions, groups, stats, examples,
                       layers, overlays) -> dict | None:
    """The dataset map (PCA of the deepest report layer) and every image's card, for the page."""
    pca = embedding.compute_pca_map(run, layers[0])
    if not len(pca.image_ids):
        return None
    tops = {layer: cards.compute_top_channels(run, layer, stats, groups) for layer in layers}
    sprites = write_thumbnails(cfg, run, out, [str(i) for i in pca.image_ids]) if cfg.image_thumbnails else None
    return make_explorer(predictions, tuple(meta["classes"]), groups.by, pca, tops, overlays.views, sprites,
                         overlays.tiles, examples)


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


def read_finished_run(run: str) -> dict:
    cli.check_utf8_path("RUN", run)
    manifest.check_complete(run)  # an unfinished (sharded) run is refused, naming the shards still missing
    try:
        meta = tables.read_run_json(run)
    except FileNotFoundError:
        raise ConfigError(f"run {run!r}: no {contract.RUN_JSON} there; RUN must be a finished extract output "
                          "(its run.json is written last)") from None
    except ValueError as e:
        raise ConfigError(f"run {run!r}: {contract.RUN_JSON} cannot be read ({e})") from None
    if not meta.get("layers") or not meta.get("classes"):
        raise ConfigError(f"run {run!r}: {contract.RUN_JSON} names no layers or no classes")
    return meta


def run_checks(qa, run: Path, predictions: pd.DataFrame, classes, out: Path) -> checks.Checks | None:
    """OUT/report/dataset_issues.parquet, its method and figures in the file's metadata; None when off."""
    (out / contract.DATASET_ISSUES).unlink(missing_ok=True)   # never an earlier report's table beside this page
    if not qa.enabled:
        return None
    t0 = time.perf_counter()
    ids, x = checks.read_layer_means(run, qa.layer)
    settings = checks.Settings(qa.near_duplicate_cosine, qa.near_duplicate_radius, qa.neighbours,
                               qa.exact_max_images, qa.approx_dims, qa.memory_mb << 20)
    found = checks.compute_checks(ids, x, predictions.set_index(contract.IMAGE_ID), classes, settings)
    found.meta.update(layer=qa.layer, seconds=round(time.perf_counter() - t0, 2), library=checks.library_versions())
    tables.write_table(found.issues, contract.DATASET_ISSUES_SCHEMA, out / contract.DATASET_ISSUES, found.meta)
    log.info("dataset checks over %d images in %.1f s (%s): %s", len(ids), found.meta["seconds"],
             found.meta["search"], ", ".join(f"{v} {k}" for k, v in found.meta["counts"].items()))
    return found


def check_layers(layers: tuple[str, ...], meta: dict, key: str = "layers") -> list[str]:
    """The report's layers, as configured (conv5_3 first by default), all of them recorded by the run."""
    missing = [name for name in layers if name not in meta["layers"]]
    if missing:
        raise ConfigError(f"{key}: {missing[0]!r} was not recorded by this run; it has {', '.join(meta['layers'])}")
    return sorted(layers, reverse=True)  # the deepest first: conv5_3 before conv4_3


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


def parse(argv: list[str] | None = None) -> ReportConfig:
    p = cli.ArgumentParser(prog="python -m jobs.report", description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a finished extract output folder (the OUT holding run.json)")
    p.add_argument("--out", help="where the page goes (default RUN/report)")
    p.add_argument("--layers", help="comma-separated layers with galleries (default conv5_3,conv4_3)")
    p.add_argument("--device", help="device for the overlays: auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    cli.add_config_args(p)
    args = p.parse_args(argv)
    flags = dict(run=args.run, out=args.out, layers=args.layers, device=args.device, overlays=args.overlays,
                 progress=args.progress)
    cfg = cli.resolve_config(ReportConfig, "report", args, flags, nested={"qa": "report_qa"})
    if not cfg.run:
        raise ConfigError("run: no run given; pass --run OUT (make report RUN=OUT)")
    return cfg


if __name__ == "__main__":
    runtime.setup_logging()
    sys.exit(cli.run_main(parse, main, "report"))
