"""The loader's half of --decode gpu: a JPEG the device can decode is checked and hashed here cheaply, and travels to
the main process as its bytes; everything else is decoded and preprocessed here, as on the CPU path.

The check is `decode_image` in PIL's draft mode: the whole entropy-coded stream is decoded, so a truncated or corrupt
file fails here with the CPU path's reason and error row; only the inverse DCT is scaled (by 1/2, 1/4 or 1/8, the
coarsest that keeps the short side >= DRAFT_SIDE; a smaller JPEG is decoded whole), which saves the full-size pixels;
the resize is the device's. The pHash is taken from that image. DRAFT_SIDE was measured on the 20 real photos of
../shared and 1,200 copies of them (resized 0.1-1x; quality 60-95; 4:2:0 and 4:4:4, grey, progressive), against
the pHash of the full decode (benchmarks/measure_draft_phash.py): at 192 px the 518 drafted decodes are at most
2 bits apart (84% equal, mean 0.32); at 160 px up to 4, at 128 px up to 8, at a thumbnail's 32 px up to 10 (mean
2.0). A --decode gpu run's pHashes are so within 2 bits of a cpu run's: the near-duplicate radius is 10 bits
(analysis/stats/dataset_issues.py).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image

from analysis.data.dataset import ImageDataset, Item
from analysis.data.decoding import decode_image
from analysis.data.preprocessing import _MAX_RESIZED_CROPS, _resized_size

_SOI = b"\xff\xd8\xff"
_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads
_RGB_IDS = [ord("R"), ord("G"), ord("B")]  # component ids that make libjpeg read the colours as RGB, not YCbCr
DRAFT_SIDE = 192  # decode_image's min_side for the check: the pHash's error measured (module docstring)


@dataclass(frozen=True)
class JpegHeader:
    width: int  # as stored
    height: int
    orientation: int  # EXIF orientation 1-8 as decode_image applies it (1 when absent or unreadable)


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The header of a baseline or progressive JPEG whose colours torchvision's decoders give as PIL does (YCbCr or
    grey); None for anything else (CMYK, YCCK, RGB-coded, not a JPEG, an unreadable header): the CPU path's."""
    if not data.startswith(_SOI):
        return None
    with warnings.catch_warnings():  # as decode_image: EXIF and size warnings are noise here
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data), formats=("JPEG",))
            components = [c[0] for c in getattr(im, "layer", ())]
            rgb_coded = im.info.get("adobe_transform") == 0 or components == _RGB_IDS
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or (im.mode == "RGB" and rgb_coded):
                return None
            return JpegHeader(im.width, im.height, _read_orientation(im))
        except Exception:  # noqa: BLE001 - any failure: the CPU path decodes the file and names its error
            return None


def _read_orientation(im: Image.Image) -> int:
    """ImageOps.exif_transpose's reading of the orientation; 1 where decoding.py's _apply_exif_orientation would
    leave the image as it is (no tag, another value, unreadable EXIF)."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except (SyntaxError, ValueError, TypeError, IndexError, KeyError, struct.error, EOFError, OSError):
        return 1
    return int(value) if not isinstance(value, bool) and value in range(2, 9) else 1


class JpegBytesDataset(ImageDataset):
    """ImageDataset for --decode gpu: a JPEG that the device decodes (`read_jpeg_header`), unless so thin that the
    preprocessing resamples a box of it (Preprocessing.view), becomes an Item with no image, its bytes and its EXIF
    orientation, checked and hashed in draft mode; any other file is decoded and preprocessed here as ImageDataset
    does. The rows (error, width, height, format, sha256) are the CPU path's; the pHash is the draft's (module
    docstring)."""

    def make_item(self, i: int, data: bytes) -> Item:
        header = read_jpeg_header(data)
        if header is None or self._resamples_a_box(header):
            return super().make_item(i, data)
        return self.decode_item(
            i,
            data,
            lambda d: decode_image(d, self.max_pixels, min_side=DRAFT_SIDE),  # the draft: checked and hashed
            # encoded: writable, so that the device step wraps it in a tensor without a copy
            lambda decoded: {"image": None, "encoded": bytearray(data), "orientation": header.orientation},
        )

    def _resamples_a_box(self, header: JpegHeader) -> bool:
        new_w, new_h = _resized_size(header.width, header.height, self.preprocessing.resize)
        return new_w * new_h > _MAX_RESIZED_CROPS * self.preprocessing.crop * self.preprocessing.crop
