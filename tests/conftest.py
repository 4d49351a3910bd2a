"""Shared fixtures: a fresh TORCH_HOME, the shared seed images, and the runs that several test modules read (built
once per worker process: session scope). Plain helpers are in helpers.py; a test module never imports another."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.small_runs")  # its checks on loaded weights fail with pytest's details

SEED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-images"


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


LAUNCHER_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_PROCID",
    "SLURM_NTASKS",
)


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


@pytest.fixture(scope="session")
def page(tmp_path_factory) -> Path:
    """The report folder of a real run (random weights, 64 px) over class folders holding the hostile names and one
    broken file. Tests only read it. test_inspect.py has a `page` of its own."""
    from tests.helpers import HOSTILE, write_image
    from tests.small_runs import run_extract_and_report

    data = tmp_path_factory.mktemp("data")
    for i in range(5):
        write_image(data / "Cat" / f"{i}.jpg", size=(80, 64), seed=i)
        write_image(data / "Dog" / f"{i}.jpg", size=(64, 80), seed=100 + i)
    for i, name in enumerate(HOSTILE):
        write_image(data / ("Cat" if name.startswith("cat") else "Dog") / name, size=(72, 72), seed=200 + i)
    (data / "Dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return run_extract_and_report(data, tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(DATA, OUT) of the fault tests' uninterrupted run: 8 files (dog.7.jpg empty) in units of 3, one batch per
    unit. Tests only read it. test_resume.py has a `reference` of its own (the job in a child process)."""
    from tests.faults import run
    from tests.run_tables import make_dataset

    root = tmp_path_factory.mktemp("reference")
    data = make_dataset(root / "train")
    assert run(data, root / "out") == 0
    return data, root / "out"


@pytest.fixture(scope="module")
def one_model():
    """VGG16's random init is half of each small run, and every run of a module that asks for this loads the same
    model: load it once per module."""
    from jobs import extract

    real, loaded = extract.load_chosen_model, {}

    def load_chosen_model(choice, **kwargs):
        key = repr(
            (
                choice.weights,
                choice.classes,
                choice.classes_file,
                choice.imagenet_classes,
                choice.seed,
                sorted(kwargs.items()),
            )
        )
        loaded[key] = loaded.get(key) or real(choice, **kwargs)
        return loaded[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract, "load_chosen_model", load_chosen_model)
        yield


@pytest.fixture
def no_cached_zips():
    """read_bytes keeps zips open per (pid, path); a handle from before a fault would still read the old archive."""
    from analysis.data import sources

    yield
    for zf in sources._ZIPS.values():
        zf.close()
    sources._ZIPS.clear()
