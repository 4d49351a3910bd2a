"""One command on a GPU machine: does the whole extract keep the GPU busy, and if not, what limits it?

    python -m benchmarks.bench_gpu            (make bench-gpu)   one NVIDIA GPU, about 16 cores: under 8 minutes
    python -m benchmarks.bench_gpu --smoke    the same code paths at tiny sizes on the CPU (tests/test_bench_gpu.py)

Sections (README, "Speed"), each with a time budget under one deadline: a section that fails prints the last line
of its traceback and the next one runs. The last line says the whole extract's img/s and what limits it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.gpu_verdict import make_verdict


@dataclasses.dataclass(frozen=True)
class Settings:
    device: str
    images: int                     # JPEGs written
    image_wh: tuple[int, int]       # their size
    size: int                       # the crop the network sees
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    workers: tuple[int, ...]
    compile_backend: str
    seconds: float                  # timing window of one bare-forward figure
    min_iters: int                  # ... and the fewest forwards in it
    loader_seconds: float           # ... of one DataLoader figure
    extract_seconds: float          # the whole extract runs on about this many seconds' worth of images
    compare_images: int
    torchrun_images: int
    profile_images: int
    deadline: float                 # seconds for the whole script
    budgets: dict = dataclasses.field(default_factory=dict)


FULL = Settings("cuda", 20000, (500, 375), 224, (64, 128, 256), ("bf16", "fp16"), (4, 8, 15), "inductor", 2.0, 3,
                6.0, 20.0, 64, 2048, 1024, 450.0, dict(data=90, forward=50, loader=45, extract=110, profile=40,
                                                       compare=60, torchrun=70, compile=150))
# On a CPU bf16 may be emulated and VGG16's classifier (124M weights) costs the same at any image size: one dtype,
# the fewest forwards. The budgets only stop a hang: on an idle 2-core machine the whole smoke run takes ~40 s.
SMOKE = Settings("cpu", 24, (64, 48), 32, (2,), ("bf16",), (1, 2), "eager", 0.0, 1, 0.3, 0.0, 4, 4, 8, 900.0,
                 dict(data=60, forward=120, loader=60, extract=180, profile=120, compare=180, torchrun=180,
                      compile=120))
SECTIONS = ("data", "forward", "loader", "profile", "extract", "compare", "torchrun", "compile")


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


class Bench:
    def __init__(self, s: Settings, tmp: Path):
        self.s, self.tmp, self.t0 = s, tmp, time.perf_counter()
        self.device = torch.device(s.device)
        self.data = tmp / "train"
        self.found: dict = {}        # what the sections learnt, for the ones after them and the last line
        self.weights = tmp / "vgg16-random.safetensors"   # random weights made once: every job loads this file
        self._model = None

    @property
    def model(self) -> torch.nn.Module:
        from benchmarks.gpu_forward import make_model  # noqa: PLC0415

        if self._model is None:
            self._model = make_model(self.device)
        return self._model

    def job_args(self, data: Path, out: Path, *extra: str) -> list[str]:
        return ["--data", str(data), "--out", str(out), "--weights", str(self.weights), "--image-size",
                str(self.s.size), "--no-progress", "--overwrite", *extra]

    def run(self, name: str) -> None:
        left = self.s.deadline - (time.perf_counter() - self.t0)
        budget = min(self.s.budgets[name], left - 5)
        print(f"\n== {name} (budget {budget:.0f} s)", flush=True)
        if budget < 5:
            print(f"-- {name}: skipped: the script's deadline ({self.s.deadline:.0f} s) is near", flush=True)
            return
        t = time.perf_counter()
        try:
            with time_limit(budget):
                getattr(self, f"section_{name}")()
            print(f"-- {name}: ok in {time.perf_counter() - t:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - a section's failure is reported, and the next section runs
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"-- {name}: FAILED after {time.perf_counter() - t:.1f} s: {last}", flush=True)

    def config(self, **kw):
        from benchmarks.profile_extract import make_config  # noqa: PLC0415

        return make_config(self.data, self.tmp / "profile", self.s.device, kw.get("precision", "auto"),
                           kw.get("batch"), self.s.size, weights=str(self.weights))

    def section_data(self) -> None:
        from safetensors.torch import save_file  # noqa: PLC0415

        from benchmarks.images import write_images  # noqa: PLC0415

        t = time.perf_counter()
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, self.weights)
        total, step, budget = 0, 2000, self.s.budgets["data"]
        for start in range(0, self.s.images, step):
            if time.perf_counter() - t > 0.6 * budget:   # fewer files rather than no weights or half a section
                print(f"stopped writing at {start} files: 60% of the section's {budget} s budget spent")
                break
            total += write_images(self.data, min(self.s.images, start + step), self.s.image_wh, first=start)
        n = len(list(self.data.iterdir()))
        print(f"{n} JPEGs of {self.s.image_wh[0]}x{self.s.image_wh[1]}, {total / n / 1024:.1f} KB on average, and "
              f"random weights, written in {time.perf_counter() - t:.1f} s to {self.tmp}")

    def section_forward(self) -> None:
        from benchmarks.gpu_forward import measure_forward  # noqa: PLC0415

        model, bare = self.model, self.found.setdefault("bare", {})
        for precision in self.s.dtypes:
            for batch in self.s.batches:
                v = measure_forward(model, self.device, precision, batch, self.s.size, self.s.seconds,
                                    self.s.min_iters)
                bare[(precision, batch, None)] = v
                print(f"bare forward {precision} batch {batch:4d} channels_last eager   {v:9.1f} img/s")
        if self.device.type == "cuda":
            precision, batch, _ = max(bare, key=bare.get)
            torch.backends.cudnn.benchmark = True
            try:
                v = measure_forward(model, self.device, precision, batch, self.s.size, self.s.seconds,
                                    self.s.min_iters)
            finally:
                torch.backends.cudnn.benchmark = False
            print(f"bare forward {precision} batch {batch:4d} cudnn.benchmark=True  {v:9.1f} img/s (the job "
                  "leaves it off)")

    def section_loader(self) -> None:
        from benchmarks.gpu_forward import measure_loader  # noqa: PLC0415

        cfg, loader = self.config(batch=max(self.s.batches)), self.found.setdefault("loader", {})
        for w in self.s.workers:
            loader[w], first = measure_loader(cfg, self.device, w, self.s.loader_seconds)
            print(f"DataLoader alone, {w:2d} workers, batch {cfg.batch_size}: {loader[w]:8.1f} img/s "
                  f"({loader[w] / w:.0f} per worker; first batch after {first:.1f} s)")

    def best_batch(self) -> int:
        """The batch of the fastest bare forward in the precision `auto` picks here (any, if not measured)."""
        from jobs import runtime  # noqa: PLC0415

        bare, auto = self.found.get("bare", {}), runtime.pick_precision("auto", self.device)
        keys = [k for k in bare if k[2] is None and k[0] == auto] or [k for k in bare if k[2] is None]
        return max(keys, key=bare.get)[1] if keys else self.config().batch_size

    def section_extract(self) -> None:
        from benchmarks.gpu_forward import measure_forward  # noqa: PLC0415
        from benchmarks.gpu_jobs import link_subset, run_extract  # noqa: PLC0415
        from benchmarks.gpu_verdict import MAIN_PARTS  # noqa: PLC0415
        from jobs import cluster  # noqa: PLC0415

        loader, parts = self.found.get("loader", {}), self.found.get("parts", {})
        default_workers = cluster.pick_workers("auto", self.device)
        # As many images as the slower stage gets through in extract_seconds: decode, or the main process's parts
        expected = min(loader.get(default_workers, min(loader.values(), default=1e9)),
                       1000 / sum(parts[p] for p in MAIN_PARTS) if parts else 1e9)
        n = max(64, min(self.s.images, int(expected * self.s.extract_seconds)))
        data = link_subset(self.data, self.tmp / f"extract-{n}", n)
        best_workers = max(loader, key=loader.get, default=default_workers)
        runs = [("default", []), ("best", ["--batch-size", str(self.best_batch()), "--workers", str(best_workers)])]
        for label, extra in runs:
            meta = run_extract(self.job_args(data, self.tmp / f"out-{label}", "--device", self.s.device, *extra))
            rate, batch = meta["timings"]["images_per_s"], int(extra[1]) if extra else self.config().batch_size
            ref = measure_forward(self.model, self.device, meta["precision"], batch, self.s.size, self.s.seconds,
                                  self.s.min_iters)
            self.found[f"extract_{label}"] = dict(rate=rate, bare=ref, batch=batch, workers=meta["workers"],
                                                  precision=meta["precision"], layers=len(meta["layers"]))
            print(f"whole extract {label:7s}: {rate:8.1f} img/s on {n} images ({meta['precision']}, batch {batch}, "
                  f"{meta['workers']} workers, {len(meta['layers'])} layers, attribution "
                  f"{','.join(meta['attribution']['layers']) if meta.get('attribution') else 'none'}); bare forward "
                  f"at that batch {ref:.1f} img/s; ratio {rate / ref:.3f}")

    def section_profile(self) -> None:
        from benchmarks.profile_extract import PARTS, profile_parts  # noqa: PLC0415

        cfg = self.config(batch=self.best_batch())
        parts, n = profile_parts(cfg, self.s.profile_images)
        self.found["parts"] = {p: parts[p] / n * 1000 for p in PARTS}
        total = sum(self.found["parts"].values())
        print(f"where the time goes on {self.s.device}, everything in the main process, {n} images, ms per image:")
        print("  " + "  ".join(f"{p} {v:.3f} ({v / total:.0%})" for p, v in self.found["parts"].items()))

    def section_compare(self) -> None:
        from benchmarks.gpu_jobs import compare_runs, link_subset, run_extract  # noqa: PLC0415

        data = link_subset(self.data, self.tmp / "compare", self.s.compare_images)
        out = {}
        for device, precision in (("cpu", "fp32"), (self.s.device, "fp32"), (self.s.device, "bf16")):
            out[(device, precision)] = self.tmp / f"cmp-{device}-{precision}"
            run_extract(self.job_args(data, out[(device, precision)], "--device", device, "--precision",
                                 precision, "--workers", "0"))
        for precision in ("fp32", "bf16"):
            diff = compare_runs(out[("cpu", "fp32")], out[(self.s.device, precision)])
            print(f"{self.s.device} {precision} vs cpu fp32 on {self.s.compare_images} images, max |diff| / max "
                  "|cpu| per table: " + "  ".join(f"{k} {v:.2e}" for k, v in diff.items() if k != "pred")
                  + f"  predicted class differs for {diff['pred']:.1%}")

    def section_torchrun(self) -> None:
        from analysis.store import manifest  # noqa: PLC0415
        from benchmarks.gpu_jobs import link_subset, run_torchrun  # noqa: PLC0415
        from jobs import finalize  # noqa: PLC0415

        n = self.s.torchrun_images
        data, out = link_subset(self.data, self.tmp / "torchrun", n), self.tmp / "out-torchrun"
        t = time.perf_counter()
        r = run_torchrun(self.job_args(data, out, "--device", self.s.device.split(":")[0], "--unit-size",
                                  str(max(1, n // 8))), 2, self.s.budgets["torchrun"] - 10)
        if r.returncode != 0:
            raise RuntimeError(f"torchrun exited with {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
        manifest.check_complete(out)
        code = finalize.main(finalize.parse(["--run", str(out)]))   # the last shard wrote run.json: "already"
        summary, wrote = finalize.finalize_run(out)
        print(f"torchrun 2 processes on one {self.s.device}: {n} images in {time.perf_counter() - t:.1f} s, complete "
              f"({summary['counts']['found']} found, {len(summary['shards']['processes'])} processes); process "
              "group: none (the shards share only files, so neither nccl nor gloo is used); "
              f"jobs.finalize exit {code}, run.json written by the shards {not wrote}")
        if code != 0 or wrote or summary["counts"]["found"] != n:
            raise RuntimeError(f"jobs.finalize exited with {code}, wrote run.json: {wrote}")

    def section_compile(self) -> None:
        from benchmarks.gpu_forward import measure_forward  # noqa: PLC0415

        model, bare = self.model, self.found.setdefault("bare", {})
        for precision in self.s.dtypes:
            for batch in sorted(self.s.batches, reverse=True):   # the largest first: the likeliest best
                t = time.perf_counter()
                v = measure_forward(model, self.device, precision, batch, self.s.size, self.s.seconds,
                                    self.s.min_iters, compiled=self.s.compile_backend)
                eager = bare.get((precision, batch, None))
                print(f"bare forward {precision} batch {batch:4d} torch.compile({self.s.compile_backend}) "
                      f"{v:9.1f} img/s" + (f" = {v / eager:.2f} x eager" if eager else "")
                      + f" (set up and run in {time.perf_counter() - t:.0f} s)", flush=True)

    def verdict(self) -> str:
        return make_verdict(self.found, self.s.device)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import describe_cpu, describe_gpu  # noqa: PLC0415
    from jobs import runtime  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code paths, in seconds")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in this order")
    p.add_argument("--dir", help="where to write the JPEGs and runs (default: the system's temp folder; local disk)")
    args = p.parse_args(argv)
    s = SMOKE if args.smoke else FULL
    runtime.keep_freed_memory()
    runtime.setup_logging()
    logging.getLogger("cnn_blackbox").setLevel(logging.WARNING)   # the jobs' warnings only, one line each
    print(describe_gpu(), flush=True)
    print(describe_cpu(), flush=True)
    print(f"settings: {'smoke (CPU, tiny)' if args.smoke else 'full'}, device {s.device}, deadline {s.deadline:.0f} s")
    if s.device == "cuda" and not torch.cuda.is_available():
        print("RESULT: no CUDA device here; run `make bench-gpu` on a GPU machine, or --smoke on this one")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=args.dir, ignore_cleanup_errors=True) as tmp:
        bench = Bench(s, Path(tmp))
        for name in args.sections.split(","):
            bench.run(name)
        print(f"\ntotal {time.perf_counter() - bench.t0:.0f} s", flush=True)
        print(bench.verdict(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
