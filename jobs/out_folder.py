"""Where the extract job's files go: OUT resolved and checked, and the run in it created, resumed or replaced under
a lock."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

from analysis.config import ConfigError
from analysis.data import names
from analysis.store import contract, layout, manifest
from jobs import cli

log = logging.getLogger("cnn_blackbox")
TRASH_PREFIX = ".replaced-"  # a replaced run's entries, moved aside and then deleted
LOCK_WAIT_S = 60.0  # how long a process waits for a live holder of OUT/.lock before giving up


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
        raise ConfigError(
            f"OUT '{shown}' is inside DATA '{names.make_display(data)}': a later run would analyze "
            "the run's own files; choose an OUT outside DATA"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT '{shown}' is a file; OUT must be a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ConfigError(
            f"OUT '{shown}' is not writable ({e.strerror or e}); choose another OUT or fix its permissions"
        ) from None


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
                    what += (
                        f" (only the labels differ: they can be changed without extracting again, with make "
                        f'report RUN={str(out)} ARGS="--labels FILE.csv")'
                    )
            raise ConfigError(
                f"OUT {str(out)!r} holds {what}; pass --overwrite (make: ARGS=--overwrite) to "
                "replace it, or choose another OUT"
            )
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
        if holder is None:  # released meanwhile
            continue
        host, pid, age, inode = holder
        who = f"process {pid} on {host}" if pid else "another process"
        if _is_stale(host, pid, age, stale_s):
            log.warning("breaking the lock %s left by %s, which no longer runs", path, who)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_ino == inode:  # not a lock taken since by another waiter
                    path.unlink()
            continue
        waited = time.monotonic() - start
        if waited > LOCK_WAIT_S:
            raise ConfigError(
                f"OUT {str(out)!r} is locked by {who}, which is creating or replacing the run there "
                f"({path} held for {age:.0f} s); wait for it to finish or stop it, then rerun (delete "
                f"{path} only if that process is not running)"
            )
        if not told and waited > 1:
            log.warning(
                "waiting for %s: %s is creating or replacing the run in OUT (at most %.0f s)", path, who, LOCK_WAIT_S
            )
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
        except PermissionError:  # another user's process: it runs
            pass
        return False
    return age > stale_s
