"""What a run owns in OUT, listed once: used by --overwrite (what is moved aside), resume (where stale temp files
are looked for), finalize (which parts every unit must have) and the completeness checks.

    OUT/manifest.json  run.json  config.yaml          the run's files
    OUT/units/                                         one manifest per committed unit
    OUT/predictions/  activations/<layer>/  activations_max/<layer>/  attributions/<class>/<layer>/
                                                       the tables, one part per unit in each folder
    OUT/report/                                        the report stage's tables and page (its default --out)

Anything else in OUT (a file the user put there) is no run's and is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from analysis.store import contract

MANIFEST_JSON = "manifest.json"
UNITS = "units"
TABLES = (contract.PREDICTIONS, contract.ACTIVATIONS, contract.ACTIVATIONS_MAX, contract.ATTRIBUTIONS)
# Every top-level entry of OUT that a run writes, run.json first: moved aside first, a replaced run stops looking
# complete before anything else of it goes.
RUN_ENTRIES = (contract.RUN_JSON, MANIFEST_JSON, contract.CONFIG_YAML, UNITS, *TABLES, contract.REPORT_DIR)


def find_run_entries(out: str | os.PathLike) -> list[str]:
    """The entries of RUN_ENTRIES present in OUT, in that order."""
    out = Path(out)
    return [name for name in RUN_ENTRIES if os.path.lexists(out / name)]


def unit_dirs(out: str | os.PathLike, layers: Iterable[str], attribution: Mapping[str, Any] | None = None
              ) -> list[Path]:
    """Every folder a unit writes a part into, its manifest's folder last (attribution: the run metadata's
    {"layers": ..., "classes": ...}, or None when the run attributes nothing)."""
    out = Path(out)
    dirs = [out / contract.PREDICTIONS]
    for layer in layers:
        dirs += [contract.activation_dir(out, layer, "mean"), contract.activation_dir(out, layer, "max")]
    for cls in (attribution or {}).get("classes", ()):
        dirs += [contract.attribution_dir(out, cls, layer) for layer in attribution["layers"]]
    return dirs + [out / UNITS]


def list_unit_parts(layers: Iterable[str], attribution: Mapping[str, Any] | None, unit: int) -> list[str]:
    """The Parquet parts unit `unit` must have, as its manifest names them (paths relative to OUT)."""
    return [(folder / contract.part_name(unit)).as_posix()
            for folder in unit_dirs(Path(""), layers, attribution)[:-1]]
