"""What the fault tests share: the small run and the one-line error (their fixtures, a model loaded once and the
uninterrupted run they are compared with, are in conftest.py). The tests: test_faults_out.py (OUT unusable, a full
disk) and test_faults_files.py (files and zips changed between discovery and decoding)."""

from __future__ import annotations

import errno
from pathlib import Path

from jobs import cli, extract
from tests.run_tables import FLAGS


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def run(data: Path, out: Path) -> int:
    # One batch per unit of 3 (fewer forwards). --shard 0/1: one whole process even where a launcher's variables
    # are set (the module and session fixtures run before conftest's no_launcher_env).
    return cli.run_main(
        extract.parse,
        extract.main,
        "extract",
        ["--data", str(data), "--out", str(out), *FLAGS, "--batch-size", "3", "--shard", "0/1"],
    )


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
