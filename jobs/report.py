"""Report: rank channels per class, find each class's concepts, show every channel's top images, write the HTML page.

python -m jobs.report --run OUT [--out DIR] [--labels CSV] [--layers conv5_3,conv4_3] [--config YAML]
                      [--set key=value]
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis.config import LAYER_NAMES, ConfigError
from analysis.stats import cards, dataset_issues, drivers, embedding, histograms, selectivity, topk
from analysis.stats.channel_tops import compute_channel_tops, describe_peaks
from analysis.stats.groups import Groups, make_groups
from analysis.stats.summary import PredictionSummary, compute_prediction_summary
from analysis.store import blocks, contract, tables
from analysis.store.run import FinishedRun, read_finished_run
from jobs import cli, report_concepts, report_labels, report_pictures, runtime
from jobs.config import DatasetIssuesConfig, ReportConfig
from jobs.report_concepts import make_concept_section
from reports.run.answer import pick_answer_channels
from reports.run.channel_galleries import make_channel_galleries
from reports.run.dataset_issues import list_worst, make_dataset_issues_section
from reports.run.explorer import make_explorer
from reports.run.html import render_page
from reports.run.inputs import Overlays, ReportInputs
from reports.run.page import make_context

log = logging.getLogger("cnn_blackbox")


def main(cfg: ReportConfig) -> int:
    t0 = time.perf_counter()
    cli.check_utf8_path("RUN", cfg.run)
    finished = read_finished_run(cfg.run)  # an unfinished (sharded) run is refused, naming the shards still missing
    run, meta = finished.path, finished.meta
    out = tables.report_dir(run, cfg.out)
    cli.check_utf8_path("--out", out)
    layers = check_layers(cfg.layers, meta)
    if cfg.dataset_issues.enabled:
        pick_dataset_issues_layer(cfg.dataset_issues, meta)  # refused at start, not after the statistics
    classes = tuple(meta["classes"])

    # 1. Statistics of every channel of every layer, streamed from the Parquet; ranked per class. The labels are
    #    settled first (the run's, or a CSV's given to the report): every later stage reads this frame's.
    predictions, labels = report_labels.read_labels(cfg.labels, tables.read_predictions(run, classes), meta)
    groups = make_groups(predictions, classes)
    log.info("statistics over %d images grouped by %s, %d layers", len(groups.code), groups.by, len(meta["layers"]))
    threads = runtime.count_cores()
    stats = pd.concat(
        [
            selectivity.compute_channel_stats(run, {layer: channels}, groups, cfg.stats_memory_bytes, threads)
            for layer, channels in tqdm(
                meta["layers"].items(), desc="statistics", unit="layer", disable=not cfg.progress, file=sys.stderr
            )
        ],
        ignore_index=True,
    )
    # ... and the drivers: channels ranked by their contribution to each class logit, where the run attributed.
    by_pred = make_groups(predictions, classes, contract.GROUP_PRED)
    stats = drivers.add_drivers(stats, drivers.compute_drivers(run, meta.get("attribution"), groups, by_pred))
    tables.write_table(stats, contract.CHANNEL_STATS_SCHEMA, out / contract.CHANNEL_STATS, {"labels": labels})

    # 2. Top-activating images of the most selective channels, and the most confident mistakes.
    mistakes = topk.find_mistakes(predictions, groups, cfg.mistakes)
    examples = topk.compute_top_examples(
        run, layers, stats, groups, predictions, mistakes, topk.Shown(cfg.top_channels, cfg.top_images)
    )
    tables.write_table(examples, contract.TOP_EXAMPLES_SCHEMA, out / contract.TOP_EXAMPLES, {"labels": labels})
    # ... and every channel's top images (all, within each class) in every report layer, with where each fires.
    shown = {layer: meta["layers"][layer] for layer in layers}
    tops = compute_channel_tops(run, shown, groups, cfg.top_images, cfg.stats_memory_bytes, meta.get("peak_grid"))
    tables.write_table(tops, contract.CHANNEL_TOPS_SCHEMA, out / contract.CHANNEL_TOPS, {"labels": labels})

    # ... and each class's concepts: an NMF of one layer's activations over the whole run, every image projected.
    concepts = report_concepts.run_concepts(cfg, finished, predictions, groups, out)

    # 3. Dataset checks: exact and near duplicates (files, pixels), similar scenes, likely label errors, outliers.
    issues = write_dataset_issues(cfg.dataset_issues, finished, predictions, out, labels)
    worst = list_worst(issues.issues, cfg.dataset_issues.shown) if issues else []

    # 4. Overlays: the model re-run on the shown images only (and the checks' worst cases, for their thumbnails),
    #    their means checked against the Parquet.
    overlays = (
        report_pictures.draw_overlays(cfg, finished, _pictured(examples, stats, layers, classes, concepts), out, worst)
        if cfg.overlays
        else Overlays.empty("Overlays are off (report.overlays: false).")
    )

    # 5. Figures, the map and every image's card, then the page.
    summary = compute_prediction_summary(predictions, classes, groups.by)
    figs = report_pictures.write_figures(out, meta, predictions, summary, stats, layers, cfg.top_channels)
    wrong = drivers.compute_mistake_drivers(
        run, meta.get("attribution"), examples[examples[contract.SCOPE] == contract.SCOPE_MISTAKE]
    )
    hists = histograms.compute_histograms(run, meta["layers"], groups, cfg.stats_memory_bytes)
    explorer = make_explorer_data(
        cfg, finished, out, Frames(predictions, groups, summary, stats, examples), layers, overlays
    )
    ids = explorer["ids"] if explorer else []  # the map's rows: the galleries and the cards name images by them
    peaks = describe_peaks(run, layers, meta.get("peak_grid"))
    galleries = make_channel_galleries(tops, ids, shown, classes, groups.by, cfg.top_images, peaks)
    inputs = ReportInputs(
        meta=meta,
        run=run,
        out=out,
        summary=summary,
        stats=stats,
        examples=examples,
        overlays=overlays,
        figures=figs,
        layers=layers,
        top_channels=cfg.top_channels,
        note=cfg.note,
        seconds=time.perf_counter() - t0,
        mistake_drivers=wrong,
        histograms=hists,
        explorer=explorer,
        dataset_issues=make_dataset_issues_section(issues, overlays.views, cfg.dataset_issues.shown),
        labels=labels,
        channel_galleries=galleries,
        cards=report_pictures.write_cards(run, meta, out, ids, concepts.result),
        concepts=make_concept_section(concepts, examples),
    )
    tables.write_bytes_atomic(render_page(make_context(inputs)).encode("utf-8"), out / contract.INDEX_HTML)
    log.info("report written in %.1f s: %s", time.perf_counter() - t0, (out / contract.INDEX_HTML).resolve())
    return 0


def _pictured(
    examples: pd.DataFrame, stats: pd.DataFrame, layers: list[str], classes: tuple[str, ...], concepts
) -> pd.DataFrame:
    """The top_examples rows the page draws overlays for: the mistakes, and the answer's channels where the answer
    has no concept pictures (every other channel's images are thumbnails with a ring where it fires)."""
    mistakes = examples[examples[contract.SCOPE] == contract.SCOPE_MISTAKE]
    if not layers or concepts.tiles:
        return mistakes
    answer = pick_answer_channels(stats, layers, classes).rows_of(examples)
    return pd.concat([answer, mistakes])


@dataclasses.dataclass(frozen=True, eq=False)
class Frames:
    """The report's frames in memory: the predictions with this report's labels, their grouping and summary, the
    channel statistics (channel_stats) and the shown images (top_examples)."""

    predictions: pd.DataFrame
    groups: Groups
    summary: PredictionSummary
    stats: pd.DataFrame
    examples: pd.DataFrame


def make_explorer_data(
    cfg: ReportConfig, run: FinishedRun, out: Path, frames: Frames, layers: list[str], overlays: Overlays
) -> dict | None:
    """The dataset map (PCA of the deepest report layer) and every image's card, for the page; writes the
    thumbnails' sprite sheets."""
    pca = embedding.compute_pca_map(run.path, layers[0])
    if not len(pca.image_ids):
        return None
    tops = {layer: cards.compute_top_channels(run.path, layer, frames.stats, frames.groups) for layer in layers}
    sprites = (
        report_pictures.write_thumbnails(cfg, run, out, [str(i) for i in pca.image_ids])
        if cfg.image_thumbnails
        else None
    )
    return make_explorer(frames.predictions, frames.summary, pca, tops, overlays, frames.examples, sprites)


def write_dataset_issues(
    qa: DatasetIssuesConfig, run: FinishedRun, predictions: pd.DataFrame, out: Path, labels: dict | None = None
) -> dataset_issues.DatasetIssues | None:
    """OUT/report/dataset_issues.parquet, its method and figures in the file's metadata; None when off."""
    (out / contract.DATASET_ISSUES).unlink(missing_ok=True)  # never an earlier report's table beside this page
    if not qa.enabled:
        return None
    t0 = time.perf_counter()
    refused = dataset_issues.refuse_without_phash(predictions, run.path, (run.meta.get("data") or {}).get("path"))
    if refused:  # a run extracted before the pHash: one line here and on the page, no table
        log.warning("%s", refused.refused)
        return refused
    layer = pick_dataset_issues_layer(qa, run.meta)
    ids, x = blocks.read_layer_means(run.path, layer)
    settings = dataset_issues.Settings(
        qa.near_duplicate_bits,
        qa.similar_scene_ratio,
        qa.neighbours,
        qa.exact_max_images,
        qa.approx_dims,
        qa.memory_bytes,
    )
    found = dataset_issues.compute_dataset_issues(
        ids, x, predictions.set_index(contract.IMAGE_ID), tuple(run.meta["classes"]), settings
    )
    found.meta.update(
        layer=layer,
        seconds=round(time.perf_counter() - t0, 2),
        library=dataset_issues.library_versions(),
        labels=labels,
    )
    tables.write_table(found.issues, contract.DATASET_ISSUES_SCHEMA, out / contract.DATASET_ISSUES, found.meta)
    log.info(
        "dataset checks over %d images in %.1f s (%s): %s",
        len(ids),
        found.meta["seconds"],
        found.meta["search"],
        ", ".join(f"{v} {k}" for k, v in found.meta["counts"].items()),
    )
    return found


def pick_dataset_issues_layer(qa: DatasetIssuesConfig, meta: dict) -> str:
    """The dataset checks' layer: report_qa.layer, recorded by the run; "auto": the deepest the run recorded."""
    layer = check_layers("auto", meta)[0] if qa.layer == "auto" else qa.layer
    check_layers((layer,), meta, "report_qa.layer")
    return layer


def check_layers(layers: tuple[str, ...] | str, meta: dict, key: str = "layers") -> list[str]:
    """The report's layers, deepest first: as configured, all of them recorded by the run; "all": every layer it
    recorded; or "auto": the deepest recorded layer of each of the run's two deepest blocks (conv5_3, conv4_3 when it
    recorded every layer)."""
    if layers == "all":
        return sorted(meta["layers"], reverse=True)
    if layers == "auto":
        deepest = {name.split("_")[0]: name for name in LAYER_NAMES if name in meta["layers"]}  # block -> layer
        return sorted(deepest.values(), reverse=True)[:2]
    missing = [name for name in layers if name not in meta["layers"]]
    if missing:
        raise ConfigError(
            f"{key}: {missing[0]!r} was not recorded by this run; it has {', '.join(meta['layers'])}; "
            "choose among those" + (" or leave --layers out (auto)" if key == "layers" else "")
        )
    return sorted(layers, reverse=True)  # the deepest first: conv5_3 before conv4_3


def parse(argv: list[str] | None = None) -> ReportConfig:
    p = cli.ArgumentParser(prog="python -m jobs.report", description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a finished extract output folder (the OUT holding run.json)")
    p.add_argument("--out", help="where the page goes (default RUN/report)")
    p.add_argument(
        "--labels",
        help="a CSV of image_id,label: labels for this report instead of the run's (no "
        "extract again; images it does not name keep the run's label)",
    )
    p.add_argument(
        "--layers",
        help="comma-separated layers with galleries, each recorded by the run; all: every recorded layer (default "
        "auto: conv5_3,conv4_3 or the deepest the run recorded)",
    )
    p.add_argument("--device", help="device for the overlays: auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    cli.add_config_args(p)
    args = p.parse_args(argv)
    flags = dict(
        run=args.run or None,
        out=args.out,
        labels=args.labels,
        layers=args.layers,
        device=args.device,
        overlays=args.overlays,
        progress=args.progress,
    )
    nested = {"dataset_issues": "report_qa", "concepts": "concepts"}
    cfg = cli.resolve_config(ReportConfig, "report", args, flags, nested=nested)
    if not cfg.run:
        raise ConfigError(
            "run: RUN is required: pass --run runs/<name>, the OUT of an extract run (make report RUN=runs/<name>)"
        )
    return cfg


if __name__ == "__main__":
    runtime.setup_logging()
    sys.exit(cli.run_main(parse, main, "report"))
