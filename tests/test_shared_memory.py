"""/dev/shm against what the DataLoader's workers keep there (jobs/shared_memory.py): /dev/shm's free space is faked;
enough keeps prefetch_factor 4, less lowers it in one warning line, too little for one batch per worker refuses the
job at start in one line saying what to do, before any image is read."""

from __future__ import annotations

import logging

import pytest

from analysis.config import ConfigError
from analysis.data import dataset
from jobs import cli, extract, shared_memory
from tests.helpers import write_image

MiB = 2**20
BATCH_224 = 128 * 3 * 224 * 224  # one batch of 128 crops of 224 px, uint8: 18.4 MiB


@pytest.fixture
def shm(monkeypatch):
    def fake(free: int | None):
        monkeypatch.setattr(shared_memory, "read_shm_space", lambda path=None: None if free is None else (free, free))

    return fake


def test_enough_shared_memory_keeps_the_default_prefetch(shm, caplog):
    shm(int(8 * 4 * BATCH_224 * shared_memory.MARGIN))  # exactly 8 workers x 4 batches, with the margin
    with caplog.at_level(logging.WARNING, "cnn_blackbox"):
        assert shared_memory.fit_prefetch(8, 128, 224) == 4
        assert shared_memory.fit_prefetch(0, 128, 224) == 4  # no worker: nothing in /dev/shm
    shm(None)  # no /dev/shm on this system: nothing to check
    assert shared_memory.fit_prefetch(8, 128, 224) == 4
    assert caplog.records == []


def test_less_shared_memory_lowers_prefetch_in_one_line(shm, caplog):
    per_batch = BATCH_224 * shared_memory.MARGIN
    shm(int(8 * 2.5 * per_batch))
    with caplog.at_level(logging.WARNING, "cnn_blackbox"):
        assert shared_memory.fit_prefetch(8, 128, 224) == 2
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "keeps 2 batches per worker instead of 4" in line
    assert "8 DataLoader workers x batch 128 x 147.0 KiB per 224-px image" in line and "--shm-size=" in line


@pytest.mark.parametrize("free_mib, most", [(64, 2), (10, 0)])
def test_too_little_shared_memory_is_refused_saying_what_to_do(shm, free_mib, most):
    shm(free_mib * MiB)  # Docker's default /dev/shm is 64 MB: 2 batches of 18.4 MiB (+25%) fit, not 14
    with pytest.raises(ConfigError) as e:
        shared_memory.fit_prefetch(14, 128, 224)
    msg = str(e.value)
    assert "\n" not in msg and f"/dev/shm has {free_mib:.1f} MiB free" in msg
    assert "14 DataLoader workers x batch 128" in msg and "need at least 321.6 MiB there" in msg
    assert f"pass --workers {most} or fewer" in msg and "a smaller --batch-size" in msg
    assert "docker run --shm-size=2g" in msg  # 14 x 4 batches of 23 MiB
    assert ("0: decode in this process" in msg) == (most == 0)


def test_the_extract_refuses_at_start_and_reads_no_image(shm, tmp_path, monkeypatch, capsys):
    for i in range(2):
        write_image(tmp_path / "train" / f"cat.{i}.jpg", seed=i)
    read = []
    monkeypatch.setattr(dataset, "read_bytes", lambda *a: read.append(a))
    # 2 workers x batch 4 x 64-px crops: 48 KiB a batch, 60 KiB with the margin
    shm(100 * 2**10)  # room for one batch: not one per worker
    argv = ["--data", str(tmp_path / "train"), "--weights", "random", "--image-size", "64", "--batch-size", "4"]
    argv += ["--workers", "2", "--device", "cpu", "--shard", "0/1", "--no-progress"]
    out = tmp_path / "out"
    assert cli.run_main(extract.parse, extract.main, "extract", [*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/dev/shm has 100.0 KiB free" in err[0] and "--workers 1 or fewer" in err[0], err
    assert read == [] and not [p for p in out.rglob("*") if p.is_file()]
    shm(300 * 2**10)  # room for two batches per worker, not four: the job starts, prefetch lowered
    job = extract.prepare(extract.parse([*argv, "--out", str(tmp_path / "out2")]))
    assert (job.execution.workers, job.execution.batch_size, job.execution.prefetch) == (2, 4, 2)
