"""Units and shards of the sorted file list: which files each process does, and in which batches.

Unit k is files k*U .. (k+1)*U - 1 of the sorted list, whatever the number of processes, so part k of every table
is the same set of files in a one-process run and in a 64-shard run. Shard i of N does the units k with
k % N == i: round robin, so that every shard gets a slice of every split and of every kind of file (a split of
large PNGs sorted after one of small JPEGs would otherwise land on a few shards).

Batches never cross a unit boundary: the batches of unit k are files kU .. kU+B-1, kU+B .. and so on, in every
run. oneDNN's convolutions round differently for different batch shapes, so this is what makes the union of the
shards equal, bit for bit, to a one-process run.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterator, Mapping, Sequence

from analysis.config import ConfigError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    source: str  # where it came from, for the log: "--shard", "torchrun RANK/WORLD_SIZE", ...

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclasses.dataclass(frozen=True)
class Unit:
    number: int  # k: the part-NNNNN of every table
    start: int  # first file, index into the sorted list
    stop: int  # one past the last file

    def __len__(self) -> int:
        return self.stop - self.start


def parse_shard(text: str, source: str = "--shard") -> Shard:
    """`i/N` with 0 <= i < N (0-based, as torchrun's RANK and Slurm's array task ids from 0)."""
    m = _SPEC.match(str(text))
    if not m:
        raise ConfigError(f"shard: {text!r} is not allowed; i/N with 0 <= i < N, e.g. 0/4 (from {source})")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ConfigError(
            f"shard: {text!r} is not allowed; i/N needs N >= 1 and 0 <= i <= N-1 (0-based; from {source})"
        )
    return Shard(index, count, source)


def read_shard(spec: str | None, environ: Mapping[str, str]) -> Shard:
    """The shard from, in order: `spec` (--shard i/N), torchrun's RANK/WORLD_SIZE, a Slurm array task
    (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), a Slurm task (SLURM_PROCID of
    SLURM_NTASKS); else the whole list (0/1)."""
    if spec:
        return parse_shard(spec, "--shard")
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return parse_shard(f"{environ['RANK']}/{environ['WORLD_SIZE']}", "torchrun RANK/WORLD_SIZE")
    if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1")) or 1
        index = (int(environ["SLURM_ARRAY_TASK_ID"]) - first) // step
        return parse_shard(
            f"{index}/{environ['SLURM_ARRAY_TASK_COUNT']}", "Slurm SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
        )
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        return parse_shard(f"{environ['SLURM_PROCID']}/{environ['SLURM_NTASKS']}", "Slurm SLURM_PROCID/SLURM_NTASKS")
    return Shard(0, 1, "one process")


def make_units(n_files: int, unit_size: int) -> list[Unit]:
    """Every unit of the run: files k*U .. (k+1)*U - 1, the last one shorter."""
    return [Unit(k, s, min(n_files, s + unit_size)) for k, s in enumerate(range(0, n_files, unit_size))]


def shard_of(unit: int, count: int) -> int:
    return unit % count


def select_units(units: Sequence[Unit], shard: Shard) -> list[Unit]:
    return [u for u in units if shard_of(u.number, shard.count) == shard.index]


def make_unit_batches(units: Sequence[Unit], batch_size: int) -> list[list[int]]:
    """The DataLoader's batch_sampler: file indices in batches of at most batch_size, each inside one unit."""
    return [list(range(s, min(u.stop, s + batch_size))) for u in units for s in range(u.start, u.stop, batch_size)]


def iter_unit_sizes(units: Sequence[Unit]) -> Iterator[tuple[int, int]]:
    """(unit number, files) in processing order: what the writer needs to cut its parts."""
    return ((u.number, len(u)) for u in units)
