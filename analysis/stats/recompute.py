"""Feature maps of the images a report shows: the run's model re-run on those images only, each once.

The run's resolved config (OUT/config.yaml, read by analysis/store/run.py) rebuilds the same weights and
preprocessing and says where its images are. On the way, each recomputed channel mean is compared with the one
extract recorded: a mismatch means the dataset, the weights or the preprocessing changed since the run, and the page
says so.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from analysis.data.decoding import DecodeError, decode_image
from analysis.data.discovery import DataError
from analysis.data.preprocessing import Preprocessing
from analysis.data.sources import SourceError
from analysis.model.choice import load_chosen_model
from analysis.model.featuremaps import FeatureMapRecorder
from analysis.model.precision import autocast
from analysis.model.vgg16 import LoadedModel, WeightsError
from analysis.store.run import GONE, FinishedRun, RunImages, RunSourceError

log = logging.getLogger(__name__)
TOLERANCE = {"fp32": (1e-3, 1e-4), "bf16": (5e-2, 2e-2), "fp16": (2e-2, 1e-2)}  # (rtol, atol) by the run's precision


class RecomputeError(RuntimeError):
    """The shown images cannot be re-run (data, weights or config gone); one line for the page."""


@dataclasses.dataclass(frozen=True)
class RunModel:
    loaded: LoadedModel
    preprocessing: Preprocessing
    images: RunImages  # the run's images, found again when first read
    notes: tuple[str, ...]  # differences from the run worth a line on the page


@dataclasses.dataclass
class ShownImage:
    image_id: str
    view: np.ndarray | None  # (T, T, 3) uint8 thumbnail of the crop the network saw
    maps: dict[str, dict[int, np.ndarray]]  # layer -> channel -> (h, w) float32 map after ReLU
    error: str | None = None


def load_run_model(run: FinishedRun) -> RunModel:
    """The run's model and preprocessing, never downloading; RecomputeError when they cannot be rebuilt."""
    try:
        source = run.source
    except RunSourceError as e:
        raise RecomputeError(str(e)) from None
    try:
        loaded = load_chosen_model(source, download=False, progress=False)
    except (WeightsError, ValueError) as e:
        raise RecomputeError(f"the run's model cannot be rebuilt: {e}") from None
    preprocessing, meta = source.preprocessing, run.meta
    notes = []
    run_weights = meta.get("weights") or {}
    if run_weights.get("sha256") and run_weights.get("sha256") != loaded.weights_sha256:
        notes.append(
            f"the weights file now differs from the run's (sha256 {str(loaded.weights_sha256)[:12]} "
            f"here, {str(run_weights.get('sha256'))[:12]} in the run)"
        )
    ran = {k: v for k, v in (meta.get("preprocess") or {}).items() if k in ("name", "resize", "crop")}
    now = {k: v for k, v in preprocessing.describe().items() if k in ran}
    if ran != now:
        notes.append(f"preprocessing differs from the run's: {now} here, {ran} in the run")
    return RunModel(loaded, preprocessing, run.images, tuple(notes))


def compute_shown_maps(
    rm: RunModel,
    needs: Mapping[str, Mapping[str, Iterable[int]]],
    device: torch.device,
    precision: str,
    batch_size: int,
    thumbnail: int,
) -> list[ShownImage]:
    """needs: {image_id: {layer: channels}} -> one ShownImage per image (an error instead when it cannot be read).

    Each image is decoded and run once, in batches; only the channels asked for are kept.
    """
    try:
        rm.images.find()
    except DataError as e:
        raise RecomputeError(f"the run's DATA cannot be read any more: {e}") from None
    layers = sorted({layer for want in needs.values() for layer in want})
    model = rm.loaded.model.to(device).eval().requires_grad_(False)
    shown: list[ShownImage] = []
    pending: list[tuple[ShownImage, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([t for _, t in pending]).to(device)  # (B, 3, N, N)
        with torch.no_grad(), FeatureMapRecorder(model, layers) as rec:
            with autocast(device, precision):
                model(x)
            maps = rec.take()  # layer -> (B, C, h, w)
        for b, (item, _) in enumerate(pending):
            item.maps = {
                layer: {c: maps[layer][b, c].numpy().copy() for c in needs[item.image_id].get(layer, ())}
                for layer in layers
            }
        pending.clear()

    for image_id in needs:
        try:
            data = rm.images.read_bytes(image_id)
            pil = None if data is None else decode_image(data, rm.images.max_image_pixels).image
        except (SourceError, DecodeError) as e:
            shown.append(ShownImage(image_id, None, {}, f"cannot be read now ({e.reason})"))
            continue
        if pil is None:
            shown.append(ShownImage(image_id, None, {}, GONE))
            continue
        view = rm.preprocessing.view(pil).resize((thumbnail, thumbnail), resample=2)  # 2: bilinear
        item = ShownImage(image_id, np.asarray(view, dtype=np.uint8).copy(), {})
        shown.append(item)
        pending.append((item, rm.preprocessing.transform(pil)))
        if len(pending) >= batch_size:
            flush()
    flush()
    return shown


def check_means(
    shown: Iterable[ShownImage], recorded: Mapping[tuple[str, str, int], float], precision: str
) -> list[dict[str, Any]]:
    """Recomputed channel means against the recorded ones ({(image_id, layer, channel): value}); the mismatches."""
    rtol, atol = TOLERANCE.get(precision, TOLERANCE["fp32"])
    out = []
    for item in shown:
        for layer, channels in item.maps.items():
            for c, fmap in channels.items():
                want = recorded.get((item.image_id, layer, c))
                if want is None:
                    continue
                got = float(fmap.mean(dtype=np.float64))
                if not abs(got - want) <= atol + rtol * abs(want):
                    out.append(
                        {"image_id": item.image_id, "layer": layer, "channel": c, "recorded": want, "recomputed": got}
                    )
    return out
