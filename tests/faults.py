"""What the fault tests share: the small run, the one-line error, a model loaded once, and the uninterrupted run
they are compared with. The tests: test_faults_out.py (OUT unusable, a full disk) and test_faults_files.py (files
and zips changed between discovery and decoding)."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from analysis.data import sources
from jobs import cli, extract
from tests.run_tables import FLAGS, make_dataset


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def run(data: Path, out: Path) -> int:
    # One batch per unit of 3 (fewer forwards). --shard 0/1: one whole process even where a launcher's variables
    # are set (the module fixtures run before conftest's no_launcher_env).
    return cli.run_main(extract.parse, extract.main, "extract",
                        ["--data", str(data), "--out", str(out), *FLAGS, "--batch-size", "3", "--shard", "0/1"])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(autouse=True)
def no_cached_zips():
    """read_bytes keeps zips open per (pid, path); a handle from before a fault would still read the old archive."""
    yield
    for zf in sources._ZIPS.values():
        zf.close()
    sources._ZIPS.clear()


@pytest.fixture(scope="module", autouse=True)
def one_model():
    """VGG16's random init is half of each small run, and every run here loads the same model: load it once."""
    real, loaded = extract.load_model, {}

    def load_model(weights, **kwargs):
        key = repr((weights, sorted(kwargs.items())))
        loaded[key] = loaded.get(key) or real(weights, **kwargs)
        return loaded[key]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract, "load_model", load_model)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(DATA, OUT) of an uninterrupted run: 8 files (dog.7.jpg empty) in units of 3, one batch per unit."""
    root = tmp_path_factory.mktemp("reference")
    data = make_dataset(root / "train")
    assert run(data, root / "out") == 0
    return data, root / "out"
