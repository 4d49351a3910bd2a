"""Shards: where i/N comes from, and that the shards' units are disjoint, cover the run and batch the same way."""

from __future__ import annotations

import pytest

from analysis.config import ConfigError
from analysis.store.shards import Shard, make_unit_batches, make_units, parse_shard, read_shard, select_units


@pytest.mark.parametrize(
    "spec, env, expect",
    [
        ("2/4", {"RANK": "1", "WORLD_SIZE": "8"}, (2, 4, "--shard")),
        (
            None,
            {"RANK": "1", "WORLD_SIZE": "8", "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"},
            (1, 8, "torchrun"),
        ),
        (
            None,
            {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"},
            (3, 4, "SLURM_ARRAY"),
        ),
        (
            None,
            {"SLURM_ARRAY_TASK_ID": "64", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "64"},
            (63, 64, "SLURM_ARRAY"),
        ),  # --array=1-64
        (None, {"SLURM_PROCID": "5", "SLURM_NTASKS": "16"}, (5, 16, "SLURM_PROCID")),
        (None, {}, (0, 1, "one process")),
    ],
)
def test_shard_comes_from_flag_then_torchrun_then_slurm(spec, env, expect):
    shard = read_shard(spec, env)
    assert (shard.index, shard.count) == expect[:2] and expect[2] in shard.source


@pytest.mark.parametrize("text", ["4/4", "1/0", "-1/4", "1of4", "a/b", ""])
def test_bad_shard_fails_in_one_line_saying_what_is_allowed(text):
    with pytest.raises(ConfigError) as e:
        parse_shard(text)
    assert "0 <= i" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("n_files, unit, count", [(23, 5, 3), (10, 10, 4), (7, 3, 1), (1000, 64, 7), (5, 2, 8)])
def test_shards_are_disjoint_and_cover_every_unit(n_files, unit, count):
    units = make_units(n_files, unit)
    assert [(u.start, u.stop) for u in units] == [(s, min(n_files, s + unit)) for s in range(0, n_files, unit)]
    per_shard = [select_units(units, Shard(i, count, "test")) for i in range(count)]
    numbers = sorted(u.number for mine in per_shard for u in mine)
    assert numbers == list(range(len(units)))  # each unit exactly once
    assert all(u.number % count == i for i, mine in enumerate(per_shard) for u in mine)
    sizes = [len(mine) for mine in per_shard]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_batches_never_cross_a_unit_and_do_not_depend_on_the_shards():
    units = make_units(23, 5)
    whole = make_unit_batches(units, 2)
    assert [len(b) for b in whole[:4]] == [2, 2, 1, 2]  # unit 0 = files 0..4 in batches of 2, 2, 1
    for b in whole:
        assert len({i // 5 for i in b}) == 1
    sharded = [b for i in range(3) for b in make_unit_batches(select_units(units, Shard(i, 3, "test")), 2)]
    assert sorted(map(tuple, sharded)) == sorted(map(tuple, whole))  # the same batches, regrouped
