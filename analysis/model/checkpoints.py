"""Reading weights files: a torch.load state dict (weights_only=True, never anything else), a .safetensors file, the
sha256 a torchvision file name promises, and the class names a checkpoint carries. Every failure raises
`WeightsError` with one line for the user; torch's own advice to load with weights_only=False never reaches it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Any, Mapping
from urllib.error import URLError

import torch
from safetensors import SafetensorError, safe_open

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")  # where training scripts put the state dict
_CLASS_KEYS = ("classes", "class_names")
_SHOWN = 3  # offending keys named per kind in an error message


class WeightsError(RuntimeError):
    """Weights that cannot be used; the message is one line meant for the user."""


def check_promised_sha256(file_name: str, sha256: str) -> bool | None:
    """Whether `sha256` starts with the prefix a torchvision file name promises (<name>-<sha256 prefix>.pth);
    None when the name promises none. torchvision checks it on download only, never on a file already cached."""
    promised = promised_prefix(file_name)
    return None if promised is None else sha256.startswith(promised)


def promised_prefix(file_name: str) -> str | None:
    m = re.search(r"-([0-9a-f]{8,})\.", file_name)
    return m.group(1) if m else None


def read_checkpoint(path: Path, where: str) -> tuple[dict[str, torch.Tensor], tuple[str, ...] | None]:
    if not path.is_file():
        raise WeightsError(
            f"{where}: no such file; use imagenet, random or the path of a checkpoint "
            f"(.pt, .pth, .bin via torch.load, or .safetensors)"
        )
    if path.stat().st_size == 0:
        raise WeightsError(f"{where} is an empty file")
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{where} cannot be read as safetensors ({why(e)})") from None
        raw = next((meta[k] for k in _CLASS_KEYS if k in meta), None)
        if raw is not None:
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise WeightsError(f"{where}: metadata 'classes' is not a JSON list of names: {raw[:80]!r}") from None
        state, _ = unwrap(state, where)
        return state, None if raw is None else check_names(raw, f"{where} metadata 'classes'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Never torch's advice (load with weights_only=False, or allowlist the global): either runs the file's code.
        raise WeightsError(
            f"{where} is not a plain state dict: torch.load(weights_only=True) refuses it "
            f"({why(e)}); re-save the weights alone where the model was trained: "
            f"torch.save(model.state_dict(), path), or as .safetensors"
        ) from None
    except (KeyError, IndexError):  # the unpickler reading bytes that are no pickle at all
        raise WeightsError(
            f"{where} cannot be read as a PyTorch checkpoint (its bytes are not torch.save's format); "
            f"use a file written by torch.save(model.state_dict(), path), or .safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise WeightsError(f"{where} cannot be read as a PyTorch checkpoint ({why(e)})") from None
    return unwrap(obj, where)


def unwrap(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], tuple[str, ...] | None]:
    """A bare state dict, or one under a training script's key; names under "classes"; "module." stripped."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where} holds a {type(obj).__name__}, not a state dict (parameter name -> tensor)")
    raw_classes = next((obj[k] for k in _CLASS_KEYS if k in obj), None)
    nested = next((obj[k] for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
    state = nested if nested is not None else {k: v for k, v in obj.items() if k not in _CLASS_KEYS}
    others = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise WeightsError(
            f"{where} is not a state dict (parameter name -> tensor): {len(others)} non-tensor "
            f"entries ({', '.join(map(str, others[:_SHOWN]))})"
        )
    # nn.DataParallel prefixes every key with "module." (classification-pytorch saves such checkpoints)
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    classes = None if raw_classes is None else check_names(raw_classes, f"{where} 'classes'")
    return state, classes


def check_names(names: Any, where: str) -> tuple[str, ...]:
    """Every class list enters here (checkpoint, --classes, classes file, imagenet_classes): stripped and lower-cased,
    as labels are (folder names, Kaggle prefixes, CSV labels), so that Cat/ and --classes Cat match."""
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(s, str) and s.strip() for s in names):
        raise WeightsError(f"{where}: {names!r} is not a list of class names")
    lowered = tuple(s.strip().lower() for s in names)
    if len(set(lowered)) != len(lowered):
        raise WeightsError(
            f"{where}: class names repeat once lower-cased ({', '.join(s.strip() for s in names)}); "
            "class names match labels whatever their case, so each must differ in more than case"
        )
    return lowered


def read_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _describe_refusal(text: str) -> str:
    """What torch.load(weights_only=True) refused (a global, an opcode), without the advice around it: loading with
    weights_only=False or allowlisting the global runs code from the file, which a user must not do to an
    untrusted one."""
    m = re.search(r"Unsupported global: (GLOBAL [\w.]+)", text)
    if m:
        return f"it holds pickled Python objects: {m.group(1)}"
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    reason = m.group(1).strip() if m else ""
    if not reason or re.search(r"weights_only|safe_globals|trust", reason):
        return "it holds pickled data other than tensors"
    return reason


def why(e: BaseException) -> str:
    """One short line for an exception: URLError's reason, OSError's strerror, else the first line."""
    if isinstance(e, URLError):
        text = str(e.reason)
    elif isinstance(e, pickle.UnpicklingError):
        text = _describe_refusal(str(e))
    elif isinstance(e, OSError) and e.strerror:
        text = e.strerror
    else:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        text = lines[0] if lines else type(e).__name__
    return text[:200]
