"""decode_image: every odd file gets the right RGB pixels or the right reason, and nothing but DecodeError escapes."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from analysis.data.decoding import DecodeError, decode_image

MAX_PIXELS = 10_000_000


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.int32)  # (H, W, 3)


def random_rgb(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def quadrants(w: int = 64, h: int = 64) -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """Four flat colour quadrants (JPEG keeps flat areas well): the image and its colours TL, TR, BL, BR."""
    colours = [(200, 40, 40), (30, 160, 60), (40, 60, 200), (230, 220, 90)]
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2], a[: h // 2, w // 2 :], a[h // 2 :, : w // 2], a[h // 2 :, w // 2 :] = colours
    return Image.fromarray(a), colours


def reason(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(DecodeError) as info:
        decode_image(data, max_pixels)
    return info.value.reason


# ---------------------------------------------------------------------------------------------------------------
# Files that cannot be used


def test_zero_bytes_is_empty_file():
    assert reason(b"") == "empty file"


def test_random_bytes_are_not_an_image():
    data = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert reason(data) == "not an image"
    assert reason(b"this is a text file, not a cat\n" * 20) == "not an image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])  # GIF, BMP: only PIL's message says "truncated"
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_truncated(fmt, keep):
    data = encode(random_rgb(), fmt)
    assert decode_image(data, MAX_PIXELS).image.size == (64, 48)  # whole, it decodes
    err = pytest.raises(DecodeError, decode_image, data[: int(len(data) * keep)], MAX_PIXELS).value
    assert err.reason == "truncated"
    assert (err.width, err.height, err.format) == (64, 48, fmt)  # the header was read before the failure


def test_file_cut_inside_its_header_is_truncated():
    assert reason(encode(random_rgb(), "JPEG")[:12]) == "truncated"


def test_damaged_png_data_is_corrupt():
    data = bytearray(encode(random_rgb(), "PNG"))
    data[data.find(b"IDAT") + 20] ^= 0xFF  # the zlib stream breaks; the file still ends with IEND
    assert reason(bytes(data)) == "corrupt"


def test_too_many_pixels_is_too_large():
    data = encode(random_rgb(64, 48), "PNG")
    err = pytest.raises(DecodeError, decode_image, data, 64 * 48 - 1).value
    assert err.reason == "too large"
    assert (err.width, err.height) == (64, 48)
    assert decode_image(data, 64 * 48).image.size == (64, 48)  # the limit itself is allowed


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds almost no data: what a decompression bomb looks like."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("error")  # no DecompressionBombWarning (or any warning) may leak out
@pytest.mark.parametrize("side", [10_000, 100_000])  # over PIL's warning limit; over PIL's own hard limit
def test_decompression_bomb_is_too_large_without_warnings(side):
    assert reason(png_header_only(side, side), max_pixels=MAX_PIXELS) == "too large"


def test_no_exception_but_decode_error_escapes_for_damaged_files():
    rng = np.random.default_rng(7)
    im = random_rgb(24, 16)
    seeds = [
        encode(im, "JPEG"),
        encode(im, "PNG"),
        encode(im, "GIF"),
        encode(im, "BMP"),
        encode(im, "TIFF"),
        encode(im, "WEBP"),
        encode(im.convert("P"), "PNG"),
        encode(im.convert("I;16"), "PNG"),
        encode(im.convert("CMYK"), "JPEG"),
        encode(im, "ICO"),
    ]
    outcomes = set()
    for n in range(400):
        data = bytearray(seeds[n % len(seeds)])
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[: rng.integers(1, len(data))]
        try:
            decoded = decode_image(bytes(data), MAX_PIXELS)
        except DecodeError as e:
            outcomes.add(e.reason)
        else:
            assert decoded.image.mode == "RGB"
            outcomes.add("ok")
    assert {"ok", "corrupt", "truncated"} <= outcomes  # the fuzzing did reach both good and bad paths


# ---------------------------------------------------------------------------------------------------------------
# Odd files that are fine


def test_png_named_like_a_jpeg_is_read_by_content():
    im = random_rgb()
    decoded = decode_image(encode(im, "PNG"), MAX_PIXELS)
    assert decoded.format == "PNG"
    assert np.array_equal(pixels(decoded.image), pixels(im))


def test_plain_jpeg_keeps_size_and_format():
    decoded = decode_image(encode(random_rgb(64, 48), "JPEG"), MAX_PIXELS)
    assert (decoded.width, decoded.height, decoded.format, decoded.image.mode) == (64, 48, "JPEG", "RGB")
    assert decoded.image.size == (64, 48)


def test_cmyk_jpeg_has_the_colours_of_its_rgb_original():
    im, colours = quadrants()
    data = encode(im.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = pixels(decode_image(data, MAX_PIXELS).image)
    for (y, x), colour in zip([(16, 16), (16, 48), (48, 16), (48, 48)], colours):
        assert np.abs(out[y, x] - colour).max() <= 6, (y, x, out[y, x], colour)
    assert np.abs(out - pixels(im)).mean() < 3


def test_grayscale_becomes_equal_channels_with_the_same_values():
    gray = np.random.default_rng(2).integers(0, 256, (40, 56), dtype=np.uint8)
    out = pixels(decode_image(encode(Image.fromarray(gray), "PNG"), MAX_PIXELS).image)
    for c in range(3):
        assert np.array_equal(out[..., c], gray)


def test_bilevel_image_is_black_and_white():
    a = np.zeros((16, 16), bool)
    a[:, 8:] = True
    out = pixels(decode_image(encode(Image.fromarray(a), "PNG"), MAX_PIXELS).image)
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 255).all()


def test_rgba_is_composited_over_white():
    a = np.zeros((32, 48, 4), np.uint8)
    a[:, :16] = (10, 200, 30, 0)  # fully transparent: its colour must not show
    a[:, 16:32] = (0, 0, 0, 128)  # half-transparent black over white: grey 127
    a[:, 32:] = (20, 40, 60, 255)  # opaque
    out = pixels(decode_image(encode(Image.fromarray(a), "PNG"), MAX_PIXELS).image)
    assert (out[:, :16] == 255).all()
    assert (np.abs(out[:, 16:32] - 255 * (1 - 128 / 255)) <= 1).all()
    assert (out[:, 32:] == (20, 40, 60)).all()


def test_gray_with_alpha_is_composited_over_white():
    a = np.zeros((8, 8, 2), np.uint8)
    a[:, :4] = (50, 0)
    a[:, 4:] = (50, 255)
    out = pixels(decode_image(encode(Image.fromarray(a, "LA"), "PNG"), MAX_PIXELS).image)
    assert (out[:, :4] == 255).all() and (out[:, 4:] == 50).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_is_composited_over_white(fmt):
    im = Image.new("P", (16, 16), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # index 0 red (transparent), 1 blue
    im.paste(0, (0, 0, 8, 16))
    data = encode(im, fmt, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = pixels(decode_image(data, MAX_PIXELS).image)
    assert (out[:, :8] == 255).all()  # transparent red shows as white, not red or black
    assert (out[:, 8:] == (0, 0, 255)).all()


def test_16bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257 * 10, 32896, 65535]], np.uint16).repeat(4, axis=0)  # (4, 4)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # the high-depth path, not 8-bit
    out = pixels(decode_image(data, MAX_PIXELS).image)
    assert out[0, :, 0].tolist() == [0, 10, 128, 255]  # v / 257; PIL's convert("L") would give 255s
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_float_image_in_unit_range_is_scaled_to_255():
    values = np.array([[0.0, 0.5, 1.0, 0.25]], np.float32).repeat(2, axis=0)
    out = pixels(decode_image(encode(Image.fromarray(values), "TIFF"), MAX_PIXELS).image)
    assert out[0, :, 1].tolist() == [0, 128, 255, 64]


def test_32bit_integer_image_beyond_16_bits_is_stretched():
    values = np.array([[-1000, 0, 1000, 99000]], np.int32).repeat(2, axis=0)
    out = pixels(decode_image(encode(Image.fromarray(values), "TIFF"), MAX_PIXELS).image)
    expected = np.rint((values[0] + 1000) / 100000 * 255)
    assert out[0, :, 0].tolist() == expected.tolist()


@pytest.mark.parametrize("mode, tolerance", [("YCbCr", 3), ("LAB", 10), ("CMYK", 0)])  # 8-bit LAB is coarse
def test_colour_spaces_come_back_to_their_rgb(mode, tolerance):
    im, colours = quadrants(16, 16)
    data = encode(im.convert(mode), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    out = pixels(decode_image(data, MAX_PIXELS).image)
    assert np.abs(out - pixels(im)).max() <= tolerance


def test_exif_orientation_6_rotates_and_keeps_the_stored_size():
    # Stored 64 wide x 48 high, red block in the stored top-left corner. Orientation 6 means "rotate 90 degrees
    # clockwise to display": the displayed image is 48 x 64 and the block lands in its top-right corner.
    a = np.full((48, 64, 3), 128, np.uint8)
    a[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes()), MAX_PIXELS)
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.image.size == (48, 64)
    out = pixels(decoded.image)
    assert np.abs(out[4, 48 - 5] - (255, 0, 0)).max() <= 10  # top-right: red
    for y, x in [(4, 4), (64 - 5, 4), (64 - 5, 48 - 5)]:  # the other corners: grey
        assert np.abs(out[y, x] - 128).max() <= 10, (y, x, out[y, x])


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = pixels(decode_image(data, MAX_PIXELS).image)
    assert (out == (255, 0, 0)).all()


def smooth_rgb(w: int, h: int) -> Image.Image:
    """Gradients: a picture whose downscales agree whatever the filter (random pixels do not)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([255 * x / w, 255 * y / h, 127 + 100 * np.sin(x / 40.0) * np.cos(y / 30.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize(
    "min_side, size", [(40, (60, 40)), (41, (120, 80)), (100, (240, 160)), (300, (480, 320)), (1000, (480, 320))]
)
def test_min_side_decodes_a_jpeg_at_the_smallest_dct_scale_that_covers_it(min_side, size):
    # 480 x 320: the 1/8, 1/4, 1/2 scales give a short side of 40, 80, 160; a larger need decodes it whole.
    data = encode(smooth_rgb(480, 320), "JPEG", quality=95)
    full = decode_image(data, MAX_PIXELS)
    small = decode_image(data, MAX_PIXELS, min_side=min_side)
    assert small.image.size == size
    assert (small.width, small.height, small.format) == (full.width, full.height, full.format) == (480, 320, "JPEG")
    # The drafted pixels are the whole picture's: compare with an independent downscale of the full decode.
    reference = pixels(full.image.resize(size, Image.BOX)).astype(int)
    assert np.abs(pixels(small.image).astype(int) - reference).mean() < 3


def test_min_side_leaves_other_formats_whole_and_truncation_still_found():
    png = encode(random_rgb(120, 90), "PNG")
    assert decode_image(png, MAX_PIXELS, min_side=8).image.size == (120, 90)
    jpeg = encode(random_rgb(480, 320), "JPEG")
    with pytest.raises(DecodeError) as e:
        decode_image(jpeg[: len(jpeg) // 2], MAX_PIXELS, min_side=40)
    assert e.value.reason == "truncated"
