"""The concept stage's two tables (issue #21): their names, columns and schemas, beside analysis.store.contract
(which holds every other table, and whose column names these reuse where they mean the same thing).

OUT/report/concept_images.parquet: one row per ok image x class x concept of that class.
OUT/report/concepts.parquet: one row per class x concept, concept 0 the most important of its class.
The method, its parameters and what was skipped are in each file's metadata (contract.METADATA_KEY, JSON).
"""

from __future__ import annotations

import pyarrow as pa

from analysis.store.contract import CLASS, IMAGE_ID, LAYER, PEAK_X, PEAK_Y

CONCEPT_IMAGES = "concept_images.parquet"
CONCEPTS = "concepts.parquet"

CONCEPT = "concept"  # int: 0 = the class's most important concept (largest importance), 1 the next, ...
# concept_images: `class` is whose concepts these are (the image need not be of that class)
PRESENCE = "presence"  # mean over the layer's positions of the concept's coefficient (>= 0)
PEAK = "peak"  # the largest coefficient over the positions
# PEAK_Y, PEAK_X (names shared with channel_tops, but here in pixels): the centre of the peak's cell in the crop the
# network saw, (i + 0.5) * crop / h and (j + 0.5) * crop / w; the first cell on ties
CONTRIBUTION = "contribution"  # the concept's part of the class's logit: sum_p U[p, j] * (basis_j . dlogit/dA[p])

# concepts
IMPORTANCE = "importance"  # mean contribution over the class's images
SHARE = "share"  # importance / the sum of the positive parts: the positive importances and a positive residual
PRESENCE_AUC = "presence_auc"  # AUC of presence, the class's images against the other classes'; ties one half
CHANNELS = "channels"  # the basis's top channels by weight, largest first
WEIGHTS = "weights"  # their weights in the basis normalised to sum 1 (so these sum to <= 1)
BASIS = "basis"  # the whole basis (C values, unit L2 norm): what projects a map on the concept (heatmaps)
RECONSTRUCTION_ERROR = "reconstruction_error"  # ||X - W H||_F / ||X||_F on the class's sample (same for its rows)
N_IMAGES = "n_images"  # ok images of the class
N_SAMPLE = "n_sample"  # of them, those whose positions were factorised
TOP_CHANNELS = 5

_S, _I32, _F32, _F64 = pa.string(), pa.int32(), pa.float32(), pa.float64()
CONCEPT_IMAGES_SCHEMA = pa.schema(
    [
        (IMAGE_ID, _S),
        (CLASS, _S),
        (LAYER, _S),
        (CONCEPT, _I32),
        (PRESENCE, _F32),
        (PEAK, _F32),
        (PEAK_Y, _F32),
        (PEAK_X, _F32),
        (CONTRIBUTION, _F32),
    ]
)
CONCEPTS_SCHEMA = pa.schema(
    [
        (CLASS, _S),
        (LAYER, _S),
        (CONCEPT, _I32),
        (IMPORTANCE, _F64),
        (SHARE, _F64),
        (PRESENCE_AUC, _F64),
        (CHANNELS, pa.list_(_I32)),
        (WEIGHTS, pa.list_(_F32)),
        (BASIS, pa.list_(_F32)),
        (RECONSTRUCTION_ERROR, _F64),
        (N_IMAGES, pa.int64()),
        (N_SAMPLE, pa.int64()),
    ]
)
CONCEPT_IMAGES_COLUMNS = tuple(CONCEPT_IMAGES_SCHEMA.names)
CONCEPTS_COLUMNS = tuple(CONCEPTS_SCHEMA.names)
CONCEPT_LAYERS = ("conv4_3", "conv5_3")  # the layers the stage factorises: the two deepest blocks' last convs
