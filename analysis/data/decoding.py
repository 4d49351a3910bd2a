"""Bytes -> an RGB PIL image the way a person would see the file: EXIF orientation applied, every mode made RGB.

Anything the bytes can do wrong ends as a `DecodeError` whose `reason` is the short text of the `error` column;
no other exception leaves `decode_image` for any input. The whole image is decoded here (not lazily later), so a
truncated file fails here, with its own reason, and never in the middle of preprocessing.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Raster formats we let PIL try, in its own names. An allow-list rather than all of PIL's plugins: EPS would run
# Ghostscript on untrusted bytes, and the scientific formats (FITS, GRIB, ...) are not photographs.
FORMATS = (
    "JPEG",
    "PNG",
    "GIF",
    "BMP",
    "DIB",
    "TIFF",
    "WEBP",
    "AVIF",
    "JPEG2000",
    "PPM",
    "TGA",
    "ICO",
    "PCX",
    "QOI",
    "SGI",
    "PSD",
)

# What PIL and its plugins raise on bad bytes (read from PIL's source and a fuzz run): decoder errors are OSError,
# header parsers use SyntaxError/struct.error/ValueError/IndexError/KeyError/TypeError, a few plugins raise
# EOFError, RuntimeError or NotImplementedError (unsupported variants), zlib.error leaks from compressed chunks.
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    struct.error,
    EOFError,
    zlib.error,
    ArithmeticError,
    RuntimeError,
    Image.DecompressionBombError,
)

# Signatures of formats a real photo comes in: a file that starts like one but will not open is broken, not "not an
# image".
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xff\x4f\xff\x51",
)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class DecodeError(Exception):
    """The bytes are not a usable image; `reason` is the short text stored in the `error` column.

    `width`, `height` (as stored) and `format` are set when the header was read before the failure.
    """

    def __init__(self, reason: str, width: int | None = None, height: int | None = None, format: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.width = width
        self.height = height
        self.format = format


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # mode RGB, EXIF orientation applied
    width: int  # as stored, before EXIF rotation
    height: int
    format: str | None  # PIL's name: "JPEG", "PNG", "MPO", ...


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> Decoded:
    """Decode `data` fully into an RGB image; refuse images of more than `max_pixels` before decoding them.

    min_side: the caller needs only this many pixels on the short side (a thumbnail): a JPEG is then decoded with
    its DCT scaled by 1/2, 1/4 or 1/8 (PIL's draft mode), the smallest scale that still covers it, about ten times
    cheaper for a large photo. `width` and `height` stay the stored size.
    """
    if not data:
        raise DecodeError("empty file")
    # PIL warns about corrupt EXIF, palette transparency and decompression bombs; here each image either decodes
    # or gets a reason, so the warnings are noise (thousands of them on a large dataset).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data), formats=_allowed_formats())
        except MemoryError:
            raise DecodeError("too large") from None
        except _PIL_ERRORS as e:
            raise DecodeError(_open_failure_reason(data, e)) from None
        width, height = im.size
        fmt = im.format
        try:
            _check_size(width, height, max_pixels, fmt)
            drafted = min_side is not None and fmt == "JPEG" and _draft(im, min_side)
            im.load()  # the whole first frame: truncation shows here
            if not drafted:
                width, height = im.size  # a few formats (ICO, ICNS) pick their size while loading
                _check_size(width, height, max_pixels, fmt)
            oriented = _apply_exif_orientation(im)
            rgb = _to_rgb(oriented)
        except DecodeError:
            raise
        except MemoryError:
            raise DecodeError("too large", width, height, fmt) from None
        except _PIL_ERRORS as e:
            raise DecodeError(_load_failure_reason(data, e), width, height, fmt) from None
    return Decoded(image=rgb, width=width, height=height, format=fmt)


def _draft(im: Image.Image, min_side: int) -> bool:
    """Ask the JPEG decoder for the smallest DCT scale whose short side is still >= min_side; whether it scaled."""
    w, h = im.size
    scale = max(1, min_side) / min(w, h)
    if scale >= 1:
        return False
    im.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
    return im.size != (w, h)


def _allowed_formats() -> tuple[str, ...]:
    # Only names PIL registered on this install (AVIF and JPEG2000 depend on how Pillow was built).
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def _check_size(width: int, height: int, max_pixels: int, fmt: str | None) -> None:
    if width < 1 or height < 1:
        raise DecodeError("corrupt", width, height, fmt)
    if width * height > max_pixels:
        raise DecodeError("too large", width, height, fmt)


def _open_failure_reason(data: bytes, e: BaseException) -> str:
    if isinstance(e, Image.DecompressionBombError) or "too large" in str(e).lower():
        return "too large"
    if not data.startswith(_SIGNATURES) and not _is_webp(data):
        return "not an image"
    return "truncated" if _looks_truncated(data, e) else "corrupt"


def _load_failure_reason(data: bytes, e: BaseException) -> str:
    if isinstance(e, Image.DecompressionBombError) or "too large" in str(e).lower():
        return "too large"
    if isinstance(e, ValueError) and str(e).startswith("conversion from"):
        return "unsupported mode"
    return "truncated" if _looks_truncated(data, e) else "corrupt"


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _looks_truncated(data: bytes, e: BaseException) -> bool:
    """Whether a decoding failure is best explained by the file ending early."""
    if isinstance(e, EOFError) or "truncated" in str(e).lower():
        return True
    if _is_webp(data) or data[:4] == b"RIFF":
        return len(data) < 8 + int.from_bytes(data[4:8], "little")  # RIFF states the size of what follows
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-12:]
    if data.startswith(b"\xff\xd8\xff"):
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")  # no end-of-image marker
    return False


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, IndexError, KeyError, struct.error, EOFError, OSError):
        # Unreadable EXIF says nothing reliable about orientation; the pixels themselves are fine.
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha composited over white, high bit depths scaled (not clipped) to 8 bits."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "F" or mode == "I" or mode.startswith("I;"):
        return Image.fromarray(_high_depth_to_8bit(im)).convert("RGB")
    has_alpha = (
        mode in _ALPHA_MODES
        or "transparency" in im.info
        or (mode == "P" and im.palette is not None and im.palette.mode == "RGBA")
    )
    if not has_alpha:
        return im.convert("RGB")  # 1, L, P, CMYK (PIL's conversion, no ICC profile), YCbCr, LAB, HSV, RGBX
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _high_depth_to_8bit(im: Image.Image) -> np.ndarray:
    """A one-channel 16-bit, 32-bit integer or float image -> (H, W) uint8 gray.

    I;16* is 16 bits by definition: round(v / 257), so 65535 -> 255 and 32896 -> 128 (PIL's own convert clips
    everything above 255 to white). Modes I and F do not say their range, so it is read from the values: within
    [0, 1] (F only) -> x 255; within [0, 255] as is; within [0, 65535] as 16-bit (16-bit PGM and TIFF give I);
    anything else (negative, wider) is stretched from its own minimum to its maximum. NaN and infinities count as
    the minimum.
    """
    if im.mode.startswith("I;16"):
        values = np.asarray(im.convert("I"), dtype=np.float64)
        full_scale: float | None = 65535.0
    else:
        values = np.asarray(im, dtype=np.float64)  # (H, W)
        full_scale = None
    finite = np.isfinite(values)
    lo = float(values[finite].min()) if finite.any() else 0.0
    hi = float(values[finite].max()) if finite.any() else 0.0
    values = np.where(finite, values, lo)
    if full_scale is None:
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            full_scale = 1.0
        elif lo >= 0.0 and hi <= 255.0:
            full_scale = 255.0
        elif lo >= 0.0 and hi <= 65535.0:
            full_scale = 65535.0
    if full_scale is not None:
        scaled = np.clip(values, 0.0, full_scale) * (255.0 / full_scale)
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(values)
    return np.rint(scaled).astype(np.uint8)
