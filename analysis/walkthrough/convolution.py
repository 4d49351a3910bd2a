"""One convolution on its own: Conv2d(3, 3, kernel 3, stride 1, padding 1) applied to an RGB image.

The walkthrough's first step: before VGG16's 13 conv layers, show what a single one does. The kernel is either
seeded random (what an untrained layer looks like) or a named, fixed kernel whose effect can be read (edges, blur).
Padding is zeros, as in VGG16, so a bright image border shows up as a frame in edge-like kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# ITU-R 601 luma, the weights PIL's convert("L") uses: kernels that work on brightness read all three inputs.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_LAPLACE = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float32)
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
_BOX = np.full((3, 3), 1.0 / 9.0, dtype=np.float32)
_SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32)
_IDENTITY = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
KERNEL_NAMES = ("random", "edge", "sobel", "blur", "sharpen", "identity")  # the kernels make_kernel makes


@dataclass(frozen=True)
class Kernel:
    name: str
    weight: np.ndarray  # (3 out, 3 in, 3, 3) float32, the layout of Conv2d.weight
    bias: np.ndarray  # (3,) float32
    channels: tuple[str, str, str]  # what each output channel computes, for captions
    description: str


def _per_channel(k: np.ndarray) -> np.ndarray:
    """The same 3x3 kernel on each colour channel separately: output c reads input c only."""
    w = np.zeros((3, 3, 3, 3), dtype=np.float32)
    for c in range(3):
        w[c, c] = k
    return w


def _on_luma(k: np.ndarray) -> np.ndarray:
    """A 3x3 kernel applied to the brightness: each input channel weighted by its luma share."""
    return _LUMA[:, None, None] * k[None]  # (3 in, 3, 3)


def make_kernel(name: str, seed: int = 0) -> Kernel:
    """A named kernel; 'random' draws weight and bias like Conv2d's default init, from `seed` only."""
    zero = np.zeros(3, dtype=np.float32)
    if name == "random":
        g = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / np.sqrt(3 * 3 * 3)  # Conv2d's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        weight = ((torch.rand((3, 3, 3, 3), generator=g, dtype=torch.float32) * 2 - 1) * bound).numpy()
        bias = ((torch.rand((3,), generator=g, dtype=torch.float32) * 2 - 1) * bound).numpy()
        return Kernel(
            name,
            weight,
            bias,
            ("random mix 0", "random mix 1", "random mix 2"),
            f"random weights and bias, seed {seed}, uniform in +-1/sqrt(27) like an untrained Conv2d",
        )
    if name == "edge":
        return Kernel(
            name,
            _per_channel(_LAPLACE),
            zero,
            ("red edges", "green edges", "blue edges"),
            "Laplacian (8 at the centre, -1 around) on each colour: zero on flat areas, large at edges",
        )
    if name == "sobel":
        weight = np.stack([_on_luma(_SOBEL_X), _on_luma(_SOBEL_X.T), _on_luma(_LAPLACE)])
        return Kernel(
            name,
            weight,
            zero,
            ("vertical edges", "horizontal edges", "all edges"),
            "on brightness: Sobel x (left-to-right change), Sobel y (top-to-bottom change), Laplacian",
        )
    if name == "blur":
        return Kernel(
            name,
            _per_channel(_BOX),
            zero,
            ("red blurred", "green blurred", "blue blurred"),
            "3x3 box blur (each weight 1/9) on each colour",
        )
    if name == "sharpen":
        return Kernel(
            name,
            _per_channel(_SHARPEN),
            zero,
            ("red sharpened", "green sharpened", "blue sharpened"),
            "sharpen (5 at the centre, -1 at the 4 neighbours) on each colour",
        )
    if name == "identity":
        return Kernel(
            name,
            _per_channel(_IDENTITY),
            zero,
            ("red", "green", "blue"),
            "identity (1 at the centre): the output is the input",
        )
    raise ValueError(f"unknown kernel {name!r}; valid kernels: {', '.join(KERNEL_NAMES)}")


def make_conv2d(kernel: Kernel) -> torch.nn.Conv2d:
    """The demo layer itself, with the kernel's weight and bias."""
    conv = torch.nn.Conv2d(3, 3, kernel_size=3, stride=1, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel.weight))
        conv.bias.copy_(torch.from_numpy(kernel.bias))
    return conv.eval()


def image_to_unit(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]: the demo's input."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def compute_convolution(image: np.ndarray, kernel: Kernel) -> np.ndarray:
    """(H, W, 3) uint8 image -> (3, H, W) float32 output of Conv2d(3, 3, 3, stride 1, padding 1)."""
    x = torch.from_numpy(image_to_unit(image))[None]  # (1, 3, H, W)
    with torch.inference_mode():
        y = make_conv2d(kernel)(x)  # (1, 3, H, W)
    return y[0].numpy()


def compute_display_range(output: np.ndarray) -> tuple[float, float]:
    """One range over all three channels, so the RGB picture keeps their relative strength."""
    return float(output.min()), float(output.max())


def compute_display_rgb(output: np.ndarray) -> np.ndarray:
    """(3, H, W) conv output -> (H, W, 3) uint8: [min, max] over all channels mapped linearly to [0, 255]."""
    lo, hi = compute_display_range(output)
    scaled = np.zeros_like(output) if hi == lo else (output - lo) / (hi - lo)
    return np.rint(scaled.transpose(1, 2, 0) * 255).astype(np.uint8)
