"""The report's concept stage (issue #21): each class's concepts computed over the whole run (analysis/concepts), the
two tables written, and the pictures the page leads with: per class and concept, the regions of the class's images
where the concept is strongest (a square of the crop the network saw around its peak, about the layer's effective
receptive field), each with the concept's heatmap for the hover. Tiles are named by numbers, never by the data.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.concepts.stage import ConceptResult, compute_concepts, write_concept_tables
from analysis.concepts.values import compute_concept_maps
from analysis.stats.groups import Groups
from analysis.stats.recompute import RecomputeError, RunModel, compute_shown_maps, load_run_model
from analysis.store import concept_contract as cc
from analysis.store import contract, tables
from analysis.store.run import FinishedRun
from jobs import runtime
from jobs.concepts import ProgressBars, describe_classes, make_settings
from jobs.config import ReportConfig
from reports.encode import encode_jpeg
from reports.overlays import make_overlay
from reports.run import concepts as concept_page

log = logging.getLogger("cnn_blackbox")
SHOWN = 5  # regions per concept row: five 112-px tiles fill one of the answer's two columns
TILE = 112  # px of a region's tile
# The side of a region, as a fraction of the crop: about the layer's effective receptive field, which is a fraction
# of the theoretical one (Luo et al. 2016; conv5_3's theoretical field is 212 px of 224, conv4_3's 196): half the
# crop at conv5_3 (7 x 7 of its 14 x 14 cells), three eighths at conv4_3 (10.5 of its 28 cells).
REGION = {"conv5_3": 0.5, "conv4_3": 0.375}


@dataclasses.dataclass(frozen=True)
class ConceptPictures:
    result: ConceptResult | None  # None: the stage is off
    tiles: dict[tuple[str, int], list[dict]]  # (class, concept) -> [{"image_id", "src", "heat", "peak"}], best first
    note: str | None  # why there are no concepts or no pictures of them (None: all is there)


def run_concepts(
    cfg: ReportConfig, run: FinishedRun, predictions: pd.DataFrame, groups: Groups, out: Path
) -> ConceptPictures:
    """The concept stage when report.concepts is on (its tables in OUT/report), and its region tiles."""
    for stale in [out / cc.CONCEPT_IMAGES, out / cc.CONCEPTS, *(out / "tiles").glob("concept-*.jpg")]:
        stale.unlink(missing_ok=True)  # never an earlier report's concepts beside this page
    c = cfg.concepts
    if not c.enabled:
        return ConceptPictures(None, {}, "Concepts are off (concepts.enabled: false).")
    device = runtime.pick_device(c.device)
    bars = ProgressBars(cfg.progress)
    try:  # once, for the stage and its pictures
        model = load_run_model(run)
    except RecomputeError:
        model = None  # compute_concepts tries again and says why in its notes
    result = compute_concepts(run, predictions, groups, make_settings(c), device, bars, model=model)
    bars.close()
    write_concept_tables(out, result)
    for note in result.notes:
        log.info("concepts: %s", note)
    if result.concepts.empty:
        return ConceptPictures(result, {}, None if result.notes else "no class had ok images")
    for line in describe_classes(result, c.layer):
        log.info("concepts: %s", line)
    picked = pick_regions(result, groups)
    if not cfg.overlays:
        return ConceptPictures(result, {}, "No pictures of the concepts: overlays are off (report.overlays: false).")
    try:
        tiles = draw_regions(cfg, run, result, picked, out, model)
    except RecomputeError as e:
        log.warning("no concept pictures: %s", e)
        return ConceptPictures(result, {}, f"No pictures of the concepts: {e}")
    return ConceptPictures(result, tiles, None)


def pick_regions(result: ConceptResult, groups: Groups) -> dict[tuple[str, int], pd.DataFrame]:
    """(class, concept) -> the SHOWN images of the class where the concept peaks highest (image_id, peak, peak_y,
    peak_x), best first; ties: the earlier image id."""
    im = result.images
    member = groups.codes_of(im[contract.IMAGE_ID].astype(str).tolist())
    own = im[member == im[contract.CLASS].map({c: i for i, c in enumerate(groups.classes)}).to_numpy()]
    out = {}
    for (cls, j), rows in own.groupby([contract.CLASS, cc.CONCEPT], sort=False):
        rows = rows.sort_values([cc.PEAK, contract.IMAGE_ID], ascending=[False, True], kind="stable")
        out[(str(cls), int(j))] = rows.head(SHOWN)
    return out


def draw_regions(
    cfg: ReportConfig,
    run: FinishedRun,
    result: ConceptResult,
    picked: dict[tuple[str, int], pd.DataFrame],
    out: Path,
    rm: RunModel,
) -> dict[tuple[str, int], list[dict]]:
    """Each picked image re-run once (its whole map at the concept layer), each concept's heatmap made from the
    concept's basis; the region around the peak cut from the crop, plain and with the heatmap; paths per concept."""
    layer = str(result.meta["layer"])
    channels = int(run.meta["layers"][layer])
    ids = list(dict.fromkeys(str(i) for rows in picked.values() for i in rows[contract.IMAGE_ID]))
    crop = rm.preprocessing.crop
    device = runtime.pick_device(cfg.concepts.device)
    precision = str(run.meta.get("precision") or "fp32")
    log.info("concept pictures: re-running %d images on %s (%s)", len(ids), device, precision)
    needs = {i: {layer: range(channels)} for i in ids}
    shown = {s.image_id: s for s in compute_shown_maps(rm, needs, device, precision, cfg.batch_size, crop)}
    bases = {
        (str(r[contract.CLASS]), int(r[cc.CONCEPT])): np.asarray(r[cc.BASIS], dtype=np.float32)
        for _, r in result.concepts.iterrows()
    }
    side = max(8, round(REGION.get(layer, 0.5) * crop))
    tiles: dict[tuple[str, int], list[dict]] = {}
    n = 0
    for key, rows in picked.items():
        made = []
        heats = {}
        for image_id in rows[contract.IMAGE_ID].astype(str):
            item = shown.get(image_id)
            if item is None or item.view is None or layer not in item.maps:
                continue
            maps = torch.from_numpy(np.stack([item.maps[layer][ch] for ch in range(channels)]))[None].float()
            heats[image_id] = compute_concept_maps(maps, torch.from_numpy(bases[key])[None])[0, 0].numpy()
        top = max((float(h.max()) for h in heats.values()), default=0.0) or 1.0  # one scale per concept row
        for _, r in rows.iterrows():
            image_id = str(r[contract.IMAGE_ID])
            if image_id not in heats:
                continue
            view = shown[image_id].view
            box = _box(float(r[contract.PEAK_Y]), float(r[contract.PEAK_X]), side, view.shape[0])
            heat = make_overlay(view, heats[image_id], 0.0, top, cfg.colormap, cfg.alpha)
            plain_src, heat_src = f"tiles/concept-{n:05d}.jpg", f"tiles/concept-{n:05d}-heat.jpg"
            tables.write_bytes_atomic(encode_jpeg(_cut(view, box)), out / plain_src)
            tables.write_bytes_atomic(encode_jpeg(_cut(heat, box)), out / heat_src)
            made.append({"image_id": image_id, "src": plain_src, "heat": heat_src, "peak": float(r[cc.PEAK])})
            n += 1
        tiles[key] = made
    return tiles


def _box(y: float, x: float, side: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a side x side square centred at (y, x) pixels, moved inside the size x size
    crop."""
    side = min(side, size)
    top = int(round(min(max(y - side / 2, 0), size - side)))
    left = int(round(min(max(x - side / 2, 0), size - side)))
    return top, left, top + side, left + side


def _cut(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box of an (H, W, 3) uint8 image, resized to TILE x TILE (bilinear)."""
    from PIL import Image  # noqa: PLC0415  (pillow: the report's image library, imported where it draws)

    top, left, bottom, right = box
    region = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))
    return np.asarray(region.resize((TILE, TILE), resample=Image.BILINEAR), dtype=np.uint8)


def make_concept_section(pictures: ConceptPictures, examples: pd.DataFrame) -> dict | None:
    """The page's concepts (reports/run/concepts.py), with a line per shown mistake naming the concepts of the
    wrong class that pushed it (examples: top_examples); None when the stage is off."""
    if pictures.result is None:
        return None
    result = pictures.result
    section = concept_page.make_concept_section(result.concepts, pictures.tiles, result.meta, pictures.note)
    wrong = examples[examples[contract.SCOPE] == contract.SCOPE_MISTAKE]
    lines = {
        str(i): concept_page.describe_pushed(result.images, str(i), str(p))
        for i, p in zip(wrong[contract.IMAGE_ID], wrong[contract.PRED])
        if isinstance(p, str)
    }
    section["mistakes"] = {i: line for i, line in lines.items() if line}
    return section
