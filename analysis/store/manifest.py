"""What a run in OUT is and which of its units are done: the run manifest, one manifest per unit, completeness.

    OUT/manifest.json          written once, when the run is created: its identity (dataset, weights, layers,
                               preprocessing, ...), the creator's metadata, the discovery summary, units and shards
    OUT/units/part-NNNNN.json  written last when unit NNNNN commits (after its Parquet parts): which files it holds,
                               their counts, who wrote it; its presence says the unit is done
    OUT/run.json               written once, when every unit is done: the run is complete

A unit counts as done only when its manifest carries the run's identity digest, so nothing written for another run
is ever mistaken for this one's. Every file is written atomically (temp file, fsync, rename); the two "once" files
are created with a hard link, which fails when the name exists, so two shards that finish together cannot both
write them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from analysis.config import ConfigError
from analysis.store import contract, layout, tables
from analysis.store.layout import MANIFEST_JSON, UNITS  # noqa: F401  (names of OUT's files: analysis/store/layout.py)

IDENTITY_KEYS = (
    "dataset",
    "labels",
    "weights",
    "classes",
    "class_map",
    "layers",
    "attribution",
    "preprocess",
    "precision",
    "unit_size",
    "limits",
    "format_version",
)


class IncompleteRunError(ConfigError):
    """RUN is not a complete extract output; the one-line message says which shards or units are missing."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------------
# Identity: everything that changes a row. Not the device, batch size, workers or shard count: a run resumed with
# other ones holds the same rows (the batch size can move float32 values by rounding, nothing more).


def compute_ids_digest(image_ids: Iterable[str]) -> str:
    """sha256 of the image ids, one a line, in order."""
    h = hashlib.sha256()
    for i in image_ids:
        h.update(i.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def make_identity(meta: Mapping[str, Any], records: Sequence, max_image_pixels: int, max_file_bytes: int) -> dict:
    w = meta["weights"]
    labels = compute_ids_digest(f"{r.image_id}\t{r.split}\t{r.label}" for r in records)
    identity = {
        "dataset": {"images": len(records), "ids_sha256": meta["data"]["fingerprint"]},
        "labels": labels,
        "weights": {"id": w["id"], "sha256": w["sha256"], "head": w["head"], "seed": w["seed"]},
        "classes": list(meta["classes"]),
        "class_map": meta["class_map"],
        "layers": list(meta["layers"]),
        "preprocess": {k: v for k, v in meta["preprocess"].items() if k not in ("steps", "source")},
        "precision": meta["precision"],
        "unit_size": meta["unit_size"],
        "limits": {"max_image_pixels": max_image_pixels, "max_file_bytes": max_file_bytes},
        "format_version": meta["format_version"],
    }
    # Only when on: a run begun before attribution existed is the same run as one with attribution_layers: none.
    if meta.get("attribution"):
        identity["attribution"] = {
            "layers": list(meta["attribution"]["layers"]),
            "classes": list(meta["attribution"]["classes"]),
        }
    return identity


def compute_identity_digest(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _short(value: Any) -> str:
    if isinstance(value, dict) and "ids_sha256" in value:
        return f"{value['images']} images (ids sha256 {value['ids_sha256'][:12]})"
    if isinstance(value, dict) and "sha256" in value:
        return f"{value['id']} (sha256 {str(value['sha256'])[:12]}, seed {value['seed']})"
    text = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and len(value) == 64:
        text = value[:12]
    return text if len(text) <= 80 else text[:77] + "..."


def describe_differences(there: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """`key: <there> there, <here> here` for every identity key that differs."""
    return [
        f"{k}: {_short(there.get(k))} there, {_short(here.get(k))} here"
        for k in IDENTITY_KEYS
        if there.get(k) != here.get(k)
    ]


# ---------------------------------------------------------------------------------------------------------------
# Files.


def write_json_exclusive(obj: Any, path: str | os.PathLike) -> bool:
    """Create `path` whole (temp file, fsync, hard link) unless it exists; False when it already did."""
    path = Path(path)
    with tables.reporting_write_errors(path):
        return _write_exclusive(contract.encode_json(obj), path)


def _write_exclusive(data: bytes, path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: a narrow race instead of none
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{str(path)!r} cannot be read ({e}); it was not written by this tool") from None
    return doc if isinstance(doc, dict) else None


def read_run_manifest(out: str | os.PathLike) -> dict | None:
    return _read_json(Path(out) / MANIFEST_JSON)


def unit_manifest_path(out: str | os.PathLike, unit: int) -> Path:
    return Path(out) / UNITS / contract.part_name(unit).replace(".parquet", ".json")


def write_unit_manifest(out: str | os.PathLike, unit: int, doc: Mapping[str, Any]) -> None:
    tables.write_json_atomic(dict(doc), unit_manifest_path(out, unit))


def read_unit_manifests(out: str | os.PathLike, identity_sha256: str) -> dict[int, dict]:
    """unit number -> manifest, for the committed units of this run (a manifest of another identity is ignored)."""
    folder = Path(out) / UNITS
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith("part-") and n.endswith(".json"))
    except FileNotFoundError:
        return {}
    units = {}
    for name in names:
        doc = _read_json(folder / name)
        if doc is not None and doc.get("identity_sha256") == identity_sha256:
            units[int(doc["unit"])] = doc
    return units


def plan_resume(out: str | os.PathLike, units: Sequence, identity_sha256: str, values: layout.ValueLayout) -> list:
    """The units of `units` (analysis.store.shards.Unit) still to do: those without a committed manifest. Removes the
    temp files a kill left in the middle of writing one of them (in the tables of `values`)."""
    done = read_unit_manifests(out, identity_sha256)
    todo = [u for u in units if u.number not in done]
    remove_stale_temps(layout.unit_dirs(out, values), (u.number for u in todo))
    return todo


def remove_stale_temps(folders: Iterable[Path], units: Iterable[int]) -> int:
    """Temp files a SIGKILL left behind in the middle of writing one of `units` (hidden, so no reader saw them).
    Only the shard that owns a unit writes its files, so these are nobody else's."""
    prefixes = tuple(f".part-{k:05d}." for k in units)
    removed = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            if name.endswith(".tmp") and name.startswith(prefixes):
                (folder / name).unlink(missing_ok=True)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------------------
# Units: counts, and what is missing.


def count_rows(rows: Mapping[str, Sequence[Any]], n: int) -> dict[str, Any]:
    """A unit's counts from its first n prediction rows: summed over units by finalize."""
    status, error, correct = (rows[c][:n] for c in (contract.STATUS, contract.ERROR, contract.CORRECT))
    ok = sum(s == contract.STATUS_OK for s in status)
    labeled = sum(c is not None for c in correct)
    return {
        "files": n,
        "ok": ok,
        "error": n - ok,
        "labeled": labeled,
        "correct": sum(c is True for c in correct),
        "errors_by_reason": dict(Counter(e for e in error if e is not None)),
    }


def sum_counts(units: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    total = {"files": 0, "ok": 0, "error": 0, "labeled": 0, "correct": 0}
    reasons: Counter = Counter()
    for u in units:
        c = u["counts"]
        for k in total:
            total[k] += int(c[k])
        reasons.update(c["errors_by_reason"])
    total["errors_by_reason"] = dict(reasons.most_common())
    return total


def find_missing_units(out: str | os.PathLike, run: Mapping[str, Any]) -> list[int]:
    done = read_unit_manifests(out, run["identity_sha256"])
    return [k for k in range(run["n_units"]) if k not in done]


def describe_missing(missing: Sequence[int], shards: int) -> str:
    by_shard: dict[int, list[int]] = {}
    for k in missing:
        by_shard.setdefault(k % shards, []).append(k)
    names = ", ".join(f"{i}/{shards}" for i in sorted(by_shard)[:20]) + (" ..." if len(by_shard) > 20 else "")
    units = ", ".join(str(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
    return f"{len(by_shard)} of {shards} shards have units missing: {names} (units {units})"


def check_complete(out: str | os.PathLike) -> None:
    """Return when OUT holds a complete run (run.json); else raise IncompleteRunError naming the missing shards."""
    out = Path(out)
    if (out / contract.RUN_JSON).is_file():
        return
    run = read_run_manifest(out)
    if run is None:
        raise IncompleteRunError(
            f"run {str(out)!r}: no {contract.RUN_JSON} and no {MANIFEST_JSON}; RUN must be the OUT of an extract run"
        )
    missing = find_missing_units(out, run)
    if not missing:
        raise IncompleteRunError(
            f"run {str(out)!r}: every unit is done but the run is not marked complete; make finalize RUN={out}"
        )
    raise IncompleteRunError(
        f"run {str(out)!r} is incomplete: {len(missing)} of {run['n_units']} units missing; "
        f"{describe_missing(missing, run['shards'])}; rerun them (the same command resumes), "
        f"then make finalize RUN={out}"
    )
