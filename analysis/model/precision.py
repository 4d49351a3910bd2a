"""The forward's autocast context for a precision name: one definition for the extract pass and the report's
re-run of shown images, so both compute in the same precision."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device, precision: str):
    """fp32: no autocast; bf16 / fp16: autocast to that dtype on the device."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
