"""A decoded image -> its 64-bit perceptual hash (pHash), for near duplicates that do not depend on the network.

The hash is imagehash's `phash` (hash_size 8, highfreq_factor 4) written out, because the extract imports only
what a stock GPU image holds: gray ("L", PIL's ITU-R 601 luma) -> 32 x 32 with LANCZOS -> 2-D DCT type II
(scipy's, unnormalized, along the rows' axis 0 then axis 1, as imagehash calls scipy.fftpack) -> the top-left
8 x 8 coefficients -> bit = coefficient > their median, packed row-major, the first coefficient the most
significant bit. So `compute_phash(im) & (2**64 - 1) == int(str(imagehash.phash(im)), 16)` (tests/test_phash.py
checks it bit for bit on real photos and on images of every mode).

It hashes the whole decoded image (EXIF orientation applied, made RGB), not the network's crop: two copies of a
photo cropped differently by the preprocessing are still the same photo. Cost: a gray copy and one resampling
of the full image, about a tenth of decoding it (benchmarks/bench_input.py).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from PIL import Image

HASH_SIZE = 8  # 8 x 8 coefficients: 64 bits
SAMPLE_SIZE = HASH_SIZE * 4  # imagehash's highfreq_factor 4: the DCT runs on 32 x 32
BITS = HASH_SIZE * HASH_SIZE


def compute_phash(image: Image.Image) -> int:
    """The pHash of `image` as a signed 64-bit integer: the unsigned 64-bit value, minus 2**64 when its top bit
    is set (Parquet and numpy have int64, not an unsigned column everyone reads)."""
    gray = image.convert("L").resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)  # (32, 32)
    low = scipy.fft.dct(scipy.fft.dct(pixels, axis=0), axis=1)[:HASH_SIZE, :HASH_SIZE]  # (8, 8)
    bits = (low > np.median(low)).reshape(-1)  # (64,) row-major
    return int(np.packbits(bits).view(">i8")[0])  # big-endian: first bit on top


def to_unsigned(value: int) -> int:
    """The stored signed value -> the unsigned 64-bit hash (imagehash's hex string is its `format(v, '016x')`)."""
    return value & ((1 << BITS) - 1)
