"""bench_gpu's settings (the full run on one GPU, the smoke run on the CPU), its sections in order, and the time limit
each section runs under."""

from __future__ import annotations

import contextlib
import dataclasses
import signal


@dataclasses.dataclass(frozen=True)
class Settings:
    device: str
    images: int  # JPEGs written
    image_wh: tuple[int, int]  # their size
    size: int  # the crop the network sees
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    workers: tuple[int, ...]
    compile_backend: str
    seconds: float  # timing window of one bare-forward figure
    min_iters: int  # ... and the fewest forwards in it
    loader_seconds: float  # ... of one DataLoader figure
    extract_seconds: float  # the whole extract runs on about this many seconds' worth of images
    compare_images: int
    torchrun_images: int
    profile_images: int
    deadline: float  # seconds for the whole script
    budgets: dict = dataclasses.field(default_factory=dict)
    job_batch: int | None = None  # the loader's batch: None is the job's own default on the device (batch_size auto)


FULL = Settings(
    "cuda",
    20000,
    (500, 375),
    224,
    (64, 128, 256),
    ("bf16", "fp16"),
    (4, 8, 15),
    "inductor",
    2.0,
    3,
    6.0,
    15.0,
    64,
    2048,
    1024,
    450.0,
    dict(data=90, forward=50, loader=45, decode=45, extract=140, profile=40, compare=60, torchrun=70, compile=150),
)
# On a CPU bf16 may be emulated and VGG16's classifier (124M weights) costs the same at any image size: one dtype,
# the fewest forwards. The budgets only stop a hang: on an idle 2-core machine the whole smoke run takes ~40 s.
SMOKE = Settings(
    "cpu",
    24,
    (64, 48),
    32,
    (2,),
    ("bf16",),
    (1, 2),
    "eager",
    0.0,
    1,
    0.3,
    0.0,
    4,
    4,
    8,
    900.0,
    dict(data=60, forward=120, loader=60, decode=60, extract=240, profile=120, compare=180, torchrun=180, compile=120),
    job_batch=4,
)
SECTIONS = ("data", "forward", "loader", "decode", "profile", "extract", "compare", "torchrun", "compile")


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def expire(_signum, _frame):
        raise SectionTimeout(f"stopped at its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
