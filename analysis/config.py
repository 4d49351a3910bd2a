"""Config machinery for frozen, validated configs loaded from YAML: the loader, overrides and the value checks.

Defaults live in configs/default.yaml and nowhere else: the job configs (jobs/config.py) have no defaults, so a key
missing from the YAML is an error, and so is a key the dataclass does not know. Every error is one line that names
the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

LAYER_NAMES = (
    "conv1_1",
    "conv1_2",
    "conv2_1",
    "conv2_2",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv4_1",
    "conv4_2",
    "conv4_3",
    "conv5_1",
    "conv5_2",
    "conv5_3",
)
PREPROCESS_NAMES = ("imagenet", "classification-pytorch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
REDUCTIONS = ("auto", "eager", "compiled")
DECODES = ("auto", "cpu", "gpu")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A bad config value or command line; the message is one line meant for the user."""


def read_config_section(path: str | os.PathLike | None, section: str) -> dict[str, Any]:
    """The `section` mapping of the default YAML, updated with the same section of `path` when given."""
    values = dict(_read_section(DEFAULT_CONFIG, section, required=True))
    if path is not None:
        values.update(_read_section(Path(path), section, required=False))
    return values


def _read_section(path: Path, section: str, required: bool) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"config {str(path)!r}: cannot be read ({e.strerror or e})") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config {str(path)!r}: must be a mapping of sections, got {type(doc).__name__}")
    body = doc.get(section)
    if body is None:
        if required:
            raise ConfigError(f"config {str(path)!r}: has no {section!r} section")
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"config {str(path)!r}: section {section!r} must be a mapping")
    return body


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from `--set`; the value is read as YAML, so `8`, `true`, `null`, `[a, b]` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def make_config(cls: type, values: Mapping[str, Any]):
    """Build the frozen dataclass `cls` from `values`, rejecting unknown keys and missing ones (but those with a
    default)."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(names)}")
    missing = [  # a field with a default may be left out
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"config key {missing[0]!r} has no value (configs/default.yaml must define it)")
    return cls(**{n: values[n] for n in names if n in values})


# ---------------------------------------------------------------------------------------------------------------
# Checks shared by the configs.


def reject(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}: {value!r} is not allowed; {allowed}")


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        reject(key, value, "choose one of " + ", ".join(choices))


def check_int(key: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        reject(key, value, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        reject(key, value, "true or false")


def check_optional_str(key: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value):
        reject(key, value, "a non-empty string or null")


def check_device(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _DEVICE_RE.match(value):
        reject(key, value, "auto, cpu, mps, cuda or cuda:N")


def normalize_layers(key: str, value: Any) -> tuple[str, ...]:
    """`all`, a comma-separated string or a list of layer names -> names in network order."""
    if value == "all":
        return LAYER_NAMES
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        reject(key, value, "'all' or a list of layer names: " + ", ".join(LAYER_NAMES))
    for name in value:
        if name not in LAYER_NAMES:
            raise ConfigError(f"{key}: unknown layer {name!r}; valid layers: {', '.join(LAYER_NAMES)}")
    return tuple(n for n in LAYER_NAMES if n in set(value))


def normalize_optional_layers(key: str, value: Any) -> tuple[str, ...]:
    """Like normalize_layers, and `none` (or null, or an empty list) for no layer at all."""
    if value is None or value == "none" or (isinstance(value, (list, tuple)) and not value):
        return ()
    return normalize_layers(key, value)


def normalize_class_map(key: str, value: Any) -> tuple[tuple[str, int, int], ...]:
    """{class: [first, last]} ImageNet index ranges (inclusive) -> ((class, first, last), ...)."""
    if not isinstance(value, dict) or not value:
        reject(key, value, "a mapping of class name to [first, last] ImageNet indices")
    out = []
    for name, rng in value.items():
        ok = (
            isinstance(rng, (list, tuple))
            and len(rng) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in rng)
            and 0 <= rng[0] <= rng[1] < 1000
        )
        if not ok:
            reject(f"{key}.{name}", rng, "[first, last] with 0 <= first <= last <= 999")
        out.append((str(name), int(rng[0]), int(rng[1])))
    return tuple(out)


def normalize_classes(key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        reject(key, value, "null or a list of class names")
    if len(set(value)) != len(value):
        reject(key, value, "class names without repeats")
    return tuple(value)


def check_colormap(key: str, value: Any) -> None:
    import matplotlib  # noqa: PLC0415  (only to list the colormaps)

    if not isinstance(value, str) or value not in matplotlib.colormaps:
        reject(key, value, "a matplotlib colormap such as jet, viridis, magma, inferno")


def check_fraction(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        reject(key, value, "a number between 0 and 1")
