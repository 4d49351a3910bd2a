"""Reading a channel table (a layer's activations) in the pieces the statistics need: its image ids, a block of
channels over every row, or every channel of every row.

Parquet is columnar, so a block of channels costs only its own columns' bytes; rows always come in table order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.store import contract, tables


def read_image_ids(table_dir: str | os.PathLike) -> np.ndarray:
    """(N,) object: the table's image ids, in table order."""
    ids = [
        b.column(0).to_numpy(zero_copy_only=False) for b in tables.iter_parquet_batches(table_dir, [contract.IMAGE_ID])
    ]
    return np.concatenate(ids) if ids else np.zeros(0, object)


def read_channel_block(
    table_dir: str | os.PathLike, channels: Sequence[int], n_rows: int, batch_rows: int = 65536
) -> np.ndarray:
    """(len(channels), n_rows) float32: the channels' values in table order, each column copied once.

    Part files are opened per block and closed after it: keeping them open would hold their footers (about 1 MB
    each for 513 columns) and Arrow's read buffers, for little saved time.
    """
    block = np.empty((len(channels), n_rows), np.float32)
    offset = 0
    for batch in tables.iter_parquet_batches(table_dir, [contract.channel_column(c) for c in channels], batch_rows):
        n = batch.num_rows
        if offset + n > n_rows:
            raise ValueError(f"{table_dir}: more rows in the channel columns than the {n_rows} image ids")
        for i, column in enumerate(batch.columns):
            block[i, offset : offset + n] = column.to_numpy(zero_copy_only=False)
        offset += n
    if offset != n_rows:
        raise ValueError(f"{table_dir}: {offset} rows in the channel columns but {n_rows} image ids")
    return block


def read_layer_means(run: str | os.PathLike, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,) image ids and (N, C) float32 channel means of a layer, in table order, batch by batch."""
    ids, values = [], []
    for i, x in tables.iter_channel_batches(contract.activation_dir(Path(run), layer, "mean")):
        ids.append(i)
        values.append(x.astype(np.float32))
    if not ids:
        return np.zeros(0, object), np.zeros((0, 0), np.float32)
    return np.concatenate(ids), np.concatenate(values)
