"""Where the extract job's files go, and the metadata written with them."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import random
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Sequence

import yaml

from analysis.store import contract, layout, tables
from analysis.store import manifest
from analysis.data import names
from analysis.config import ConfigError
from jobs import cli

log = logging.getLogger("cnn_blackbox")
TOOL = "cnn-blackbox"
TRASH_PREFIX = ".replaced-"   # a replaced run's entries, moved aside and then deleted
LOCK_WAIT_S = 60.0            # how long a process waits for a live holder of OUT/.lock before giving up


def resolve_out(data: str, out: str | None) -> Path:
    """OUT, or runs/<name of DATA> (a zip's name without .zip; bytes that are not UTF-8 written as \\xHH)."""
    if out:
        return Path(out)
    name = names.make_display(Path(data.rstrip("/\\")).name)
    return Path("runs") / (name[:-4] if name.lower().endswith(".zip") else name or "data")


def check_out_writable(out: Path, data: str) -> None:
    """OUT can hold a run: a folder (made if missing) where a file can be created, not inside DATA (its report's
    tiles would be found as images by the next run); else one line naming OUT."""
    shown = names.make_display(out)
    cli.check_utf8_path("OUT", out)
    real_out, real_data = os.path.realpath(out), os.path.realpath(data)
    if os.path.isdir(real_data) and (real_out + os.sep).startswith(real_data.rstrip(os.sep) + os.sep):
        raise ConfigError(f"OUT '{shown}' is inside DATA '{names.make_display(data)}': a later run would analyze "
                          "the run's own files; choose an OUT outside DATA")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT '{shown}' is a file; OUT must be a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ConfigError(f"OUT '{shown}' is not writable ({e.strerror or e}); choose another OUT or fix its "
                          "permissions") from None


def open_run(out: Path, run: dict, overwrite: bool) -> bool:
    """Make OUT hold the run described by `run` (analysis/store/manifest.py's run manifest). True: created here.

    The same run (same identity) is resumed, with or without --overwrite, so that every shard of a launch, and a
    rerun after a kill, can pass the same flags. A different run is refused naming what differs, and left as it is;
    with --overwrite it is replaced, by one process under a lock (the others then find the new run and resume it).
    """
    there = manifest.read_run_manifest(out)
    if there is not None and there.get("identity_sha256") == run["identity_sha256"]:
        return False
    with _lock(out):
        there = manifest.read_run_manifest(out)
        if there is not None and there.get("identity_sha256") == run["identity_sha256"]:
            return False
        present = layout.find_run_entries(out)
        if present and not overwrite:
            if there is None:
                what = f"files of another run ({', '.join(present)}) without a {manifest.MANIFEST_JSON}"
            else:
                differences = manifest.describe_differences(there["identity"], run["identity"])
                what = "a different run: " + "; ".join(differences)
                if differences and all(d.startswith("labels:") for d in differences):
                    what += (f" (only the labels differ: they can be changed without extracting again, with make "
                             f"report RUN={str(out)} ARGS=\"--labels FILE.csv\")")
            raise ConfigError(f"OUT {str(out)!r} holds {what}; pass --overwrite (make: ARGS=--overwrite) to "
                              "replace it, or choose another OUT")
        if present:
            _move_aside(out, present)
            log.warning("replaced the run in %s (--overwrite): %s", out, ", ".join(present))
        manifest.write_json_exclusive(run, out / manifest.MANIFEST_JSON)
        # The replaced run's entries, and those of an overwrite killed before it deleted them: listed under the
        # lock (a later overwrite's are not), deleted after it (a large run takes a while).
        trash = [out / name for name in os.listdir(out) if name.startswith(TRASH_PREFIX)]
    for folder in trash:
        shutil.rmtree(folder, ignore_errors=True)
    return True


def _move_aside(out: Path, present: list[str]) -> Path:
    """Rename the old run's files into a hidden folder (fast, and readers never see half of them), run.json first:
    the old run stops looking complete before anything else goes."""
    trash = out / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}"
    trash.mkdir()
    for name in sorted(present, key=lambda n: n != contract.RUN_JSON):
        os.replace(out / name, trash / name)
    return trash


@contextlib.contextmanager
def _lock(out: Path, stale_s: float = 60.0):
    """OUT/.lock, created exclusively and holding "<host> <pid>", held for the few milliseconds of creating or
    replacing a run. A lock whose process is gone was left by a killed one and is broken (a process on another host
    cannot be asked: its lock is broken when older than stale_s); one whose process runs is waited for, LOCK_WAIT_S
    at most, saying whom for, then refused in one line."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    start, told = time.monotonic(), False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            pass
        holder = _read_lock(path)
        if holder is None:      # released meanwhile
            continue
        host, pid, age, inode = holder
        who = f"process {pid} on {host}" if pid else "another process"
        if _is_stale(host, pid, age, stale_s):
            log.warning("breaking the lock %s left by %s, which no longer runs", path, who)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_ino == inode:   # not a lock taken since by another waiter
                    path.unlink()
            continue
        waited = time.monotonic() - start
        if waited > LOCK_WAIT_S:
            raise ConfigError(f"OUT {str(out)!r} is locked by {who}, which is creating or replacing the run there "
                              f"({path} held for {age:.0f} s); wait for it to finish or stop it, then rerun (delete "
                              f"{path} only if that process is not running)")
        if not told and waited > 1:
            log.warning("waiting for %s: %s is creating or replacing the run in OUT (at most %.0f s)", path, who,
                        LOCK_WAIT_S)
            told = True
        time.sleep(0.05 + random.random() * 0.05)
    try:
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


def _read_lock(path: Path) -> tuple[str, int, float, int] | None:
    """(host, pid, age in seconds, inode) of a lock file; pid 0 while its creator has not written it yet."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8", errors="replace").split()
    except FileNotFoundError:
        return None
    host, pid = (text[0], int(text[1])) if len(text) == 2 and text[1].isdigit() else ("?", 0)
    return host, pid, time.time() - st.st_mtime, st.st_ino


def _is_stale(host: str, pid: int, age: float, stale_s: float) -> bool:
    if pid and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # another user's process: it runs
            pass
        return False
    return age > stale_s


def make_run_manifest(meta: dict, found, cfg, shard) -> dict:
    """What OUT/manifest.json records: the identity, the creator's metadata and what finalize needs."""
    identity = manifest.make_identity(meta, found.records, cfg.max_image_pixels, cfg.max_file_bytes)
    return {"tool": TOOL, "identity": identity, "identity_sha256": manifest.compute_identity_digest(identity),
            "meta": meta, "created": manifest.now(), "created_unix": time.time(),
            "n_images": found.n_images, "unit_size": cfg.unit_size,
            "n_units": -(-found.n_images // cfg.unit_size), "shards": shard.count,
            "discovery": {"root": found.root, "layout": found.layout, "skipped": dict(found.skipped),
                          "skipped_examples": [list(e) for e in found.skipped_examples]}}


def make_unit_stamp(run: dict, shard, device, cfg) -> dict:
    """Fields of every unit manifest this process writes."""
    return {"identity_sha256": run["identity_sha256"], "shard": str(shard), "device": str(device),
            "batch_size": cfg.batch_size}


def warn_unknown_labels(records: Sequence, classes: Sequence[str]) -> None:
    unknown = Counter(r.label for r in records if r.label is not None and r.label not in classes)
    if unknown:
        log.warning("labels not among the model's classes %s (their `correct` is null): %s",
                    list(classes), dict(unknown.most_common(10)))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "pillow", "pyarrow", "pandas", "matplotlib"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def make_metadata(cfg, found, loaded, channels: dict[str, int], preprocessing, device, precision: str,
                  workers: int, label_map: dict[str, str] | None = None,
                  attribution: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced these tables: stored in every Parquet file's key-value metadata and in run.json."""
    return {
        "tool": TOOL,
        "format_version": contract.FORMAT_VERSION,
        "model": "vgg16",
        "weights": {"id": loaded.weights_id, "path": loaded.weights_path, "sha256": loaded.weights_sha256,
                    "head": loaded.head, "random": loaded.random,
                    "seed": cfg.seed if loaded.random else None,
                    "verified": loaded.weights_verified},   # False: the file is not what the id names
        "classes": list(loaded.classes),
        "class_map": [list(m) for m in loaded.class_map] if loaded.class_map else None,
        "layers": dict(channels),
        "attribution": attribution,
        "preprocess": preprocessing.describe(),
        "precision": precision,
        "device": str(device),
        "batch_size": cfg.batch_size,
        "workers": workers,
        "unit_size": cfg.unit_size,
        "versions": _versions(),
        "data": {"path": found.root, "layout": found.layout, "labels_csv": cfg.labels,
                 "label_map": dict(label_map or {}),
                 "fingerprint": fingerprint(r.image_id for r in found.records)},
    }


def fingerprint(image_ids) -> str:
    """sha256 of the sorted image ids: tells whether two runs saw the same file list."""
    return manifest.compute_ids_digest(image_ids)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_config(out: Path, cfg) -> None:
    values = {k: _plain(v) for k, v in dataclasses.asdict(cfg).items()}
    values["imagenet_classes"] = {name: [lo, hi] for name, lo, hi in cfg.imagenet_classes}
    tables.write_bytes_atomic(yaml.safe_dump({"extract": values}, sort_keys=False).encode(), out / contract.CONFIG_YAML)


def log_summary(out: Path, s: dict) -> None:
    c = s["counts"]
    acc = f"accuracy {c['accuracy']:.1%} on {c['labeled']} labeled" if c["accuracy"] is not None else "unlabeled"
    log.info("done: %d ok, %d error, %d skipped; %s; %.1f img/s on %s (%s)", c["ok"], c["error"], c["skipped"],
             acc, s["timings"]["images_per_s"] or 0.0, s["device"], s["precision"])
    if c["errors_by_reason"]:
        log.info("errors by reason: %s", c["errors_by_reason"])
    log.info("outputs in %s: predictions/, activations/<layer>/, activations_max/<layer>/, run.json", out)
