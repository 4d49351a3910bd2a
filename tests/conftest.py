"""Shared fixtures: small images written by the tests, a fresh TORCH_HOME, the shared seed images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SEED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-images"


def write_image(path: Path, size=(64, 48), seed: int = 0, fmt: str | None = None) -> Path:
    """A small RGB image with smooth random content (so that channels differ between images)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path, format=fmt)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache: nothing downloaded, nothing cached."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() then follows TORCH_HOME
    return home


@pytest.fixture
def seed_images() -> Path:
    if not SEED_IMAGES.is_dir():
        pytest.skip(f"shared seed images not found at {SEED_IMAGES} (a fresh clone has no ../shared)")
    return SEED_IMAGES


LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
                "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture(autouse=True)
def no_launcher_env(monkeypatch):
    """Tests run as one whole process even inside a Slurm job or torchrun: the shard comes from these otherwise."""
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs two workers) each worker, and every job it starts, computes on one
    thread: two workers with two threads each on two cores make every oneDNN convolution wait for a descheduled
    thread."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
