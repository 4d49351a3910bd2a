"""One command on a GPU machine: does the whole extract keep the GPU busy, and if not, what limits it?

    PYTHONPATH=. python3 -m benchmarks.bench_gpu   (make bench-gpu-system)   a GPU machine's own Python, no .venv
    python -m benchmarks.bench_gpu            (make bench-gpu)   one NVIDIA GPU, about 16 cores: under 8 minutes
    python -m benchmarks.bench_gpu --smoke    the same code paths at tiny sizes on the CPU (tests/test_bench_gpu.py)

It imports only what a stock CUDA image holds (torch, torchvision, numpy, scipy, pillow, pandas, pyarrow, pyyaml,
tqdm, matplotlib, jinja2, safetensors, scikit-learn), downloads nothing (random weights unless --weights FILE),
and prints the versions and /dev/shm's size first.

Sections (docs/benchmarks.md, "make bench-gpu"), each with a time budget under one deadline: a section that fails
prints the last line of its traceback and the next one runs. The last line says the whole extract's img/s and what
limits it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.gpu_decode import DecodeSection
from benchmarks.gpu_job_sections import JobSections
from benchmarks.gpu_settings import FULL, SECTIONS, SMOKE, Settings, time_limit
from benchmarks.gpu_verdict import make_verdict


class Bench(JobSections, DecodeSection):
    def __init__(self, s: Settings, tmp: Path, weights: Path | None = None):
        self.s, self.tmp, self.t0 = s, tmp, time.perf_counter()
        self.device = torch.device(s.device)
        self.data = tmp / "train"
        self.found: dict = {}  # what the sections learnt, for the ones after them and the last line
        # Random weights made once unless a file is given: every job loads this file, nothing is downloaded.
        self.given_weights = weights is not None
        self.weights = weights or tmp / "vgg16-random.safetensors"
        self._model = None

    @property
    def model(self) -> torch.nn.Module:
        from benchmarks.gpu_forward import make_model  # noqa: PLC0415

        if self._model is None:
            self._model = make_model(self.device)
        return self._model

    def job_args(self, data: Path, out: Path, *extra: str) -> list[str]:
        return [
            "--data",
            str(data),
            "--out",
            str(out),
            "--weights",
            str(self.weights),
            "--image-size",
            str(self.s.size),
            "--no-progress",
            "--overwrite",
            # The jobs' figures stay comparable and within their sections' budgets: the compiled reductions (and
            # their Triton compile) are measured apart, in section_compile.
            "--reductions",
            "eager",
            *extra,
        ]

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

        return make_config(
            self.data,
            self.tmp / "profile",
            self.s.device,
            kw.get("precision", "auto"),
            kw.get("batch"),
            self.s.size,
            weights=str(self.weights),
        )

    def section_data(self) -> None:
        from safetensors.torch import save_file  # noqa: PLC0415

        from benchmarks.images import write_images  # noqa: PLC0415

        t = time.perf_counter()
        if not self.given_weights:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, self.weights)
        total, step, budget = 0, 2000, self.s.budgets["data"]
        for start in range(0, self.s.images, step):
            if time.perf_counter() - t > 0.6 * budget:  # fewer files rather than no weights or half a section
                print(f"stopped writing at {start} files: 60% of the section's {budget} s budget spent")
                break
            total += write_images(self.data, min(self.s.images, start + step), self.s.image_wh, first=start)
        n = len(list(self.data.iterdir()))
        print(
            f"{n} JPEGs of {self.s.image_wh[0]}x{self.s.image_wh[1]}, {total / n / 1024:.1f} KB on average, and "
            f"{'no weights (given: ' + str(self.weights) + ')' if self.given_weights else 'random weights'}, written "
            f"in {time.perf_counter() - t:.1f} s to {self.tmp}"
        )

    def section_forward(self) -> None:
        from benchmarks.gpu_forward import measure_autotuned, measure_forward  # noqa: PLC0415

        model, bare = self.model, self.found.setdefault("bare", {})
        if self.device.type == "cuda":  # the job's compiled reductions on the GPU (Triton), before the forwards
            from benchmarks.bench_reductions import compare_in_model  # noqa: PLC0415
            from jobs import runtime  # noqa: PLC0415

            precision, t = runtime.pick_precision("auto", self.device), time.perf_counter()
            line = compare_in_model(self.best_batch(), self.s.size, precision, 5, self.device)
            print(f"reductions {precision}: {line} (set up and run in {time.perf_counter() - t:.0f} s)", flush=True)
        for precision in self.s.dtypes:
            for batch in self.s.batches:
                v = measure_forward(model, self.device, precision, batch, self.s.size, self.s.seconds, self.s.min_iters)
                bare[(precision, batch, None)] = v
                print(f"bare forward {precision} batch {batch:4d} channels_last eager   {v:9.1f} img/s")
        precision, batch, _ = max(bare, key=bare.get)
        v = measure_autotuned(model, self.device, precision, batch, self.s.size, self.s.seconds)
        what = "the job leaves it off" if self.device.type == "cuda" else f"no cuDNN on {self.device}: the path only"
        print(
            f"bare forward {precision} batch {batch:4d} cudnn.benchmark=True  {v:9.1f} img/s on a fresh thread "
            f"(its own plan cache) = {v / bare[(precision, batch, None)]:.2f} x without ({what})"
        )

    def job_batch(self) -> int:
        """The job's batch size here: batch_size auto on this device (the smoke run's tiny one on the CPU)."""
        from jobs import runtime  # noqa: PLC0415

        return self.s.job_batch or runtime.pick_batch_size("auto", self.device)

    def section_loader(self) -> None:
        from benchmarks.gpu_forward import measure_loader  # noqa: PLC0415
        from jobs import runtime  # noqa: PLC0415

        cfg, loader, batch = self.config(), self.found.setdefault("loader", {}), self.job_batch()
        decode = self.job_decode()  # decode auto's choice here: what the whole extract's loader runs
        for w in sorted({*self.s.workers, runtime.pick_workers("auto", self.device)}):  # and the job's default
            loader[w], ready = measure_loader(cfg, self.device, w, batch, self.s.loader_seconds, decode)
            print(
                f"DataLoader alone, {w:2d} workers, batch {batch} (the job's), decode {decode}: {loader[w]:8.1f} img/s "
                f"({f'{loader[w] / w:.0f} per worker' if w else 'in the main process'}), timed after the first round "
                f"of {max(1, w)} batches "
                f"(in after {ready:.1f} s)"
            )

    def best_batch(self) -> int:
        """The batch of the fastest bare forward in the precision `auto` picks here (any, if not measured)."""
        from jobs import runtime  # noqa: PLC0415

        bare, auto = self.found.get("bare", {}), runtime.pick_precision("auto", self.device)
        keys = [k for k in bare if k[2] is None and k[0] == auto] or [k for k in bare if k[2] is None]
        return max(keys, key=bare.get)[1] if keys else self.job_batch()

    def section_profile(self) -> None:
        from benchmarks.profile_extract import PARTS, profile_parts  # noqa: PLC0415

        cfg = self.config(batch=self.best_batch())
        parts, n, _ = profile_parts(cfg, self.s.profile_images, "eager")  # as the job's auto on a few thousand
        self.found["parts"] = {p: parts[p] / n * 1000 for p in PARTS}
        total = sum(self.found["parts"].values())
        print(f"where the time goes on {self.s.device}, everything in the main process, {n} images, ms per image:")
        print("  " + "  ".join(f"{p} {v:.3f} ({v / total:.0%})" for p, v in self.found["parts"].items()))

    def section_compile(self) -> None:
        from benchmarks.gpu_forward import measure_forward  # noqa: PLC0415

        model, bare = self.model, self.found.setdefault("bare", {})
        if self.device.type == "cuda":  # the job's compiled reductions on the GPU (Triton), before the forwards
            from benchmarks.bench_reductions import compare_in_model  # noqa: PLC0415
            from jobs import runtime  # noqa: PLC0415

            precision, t = runtime.pick_precision("auto", self.device), time.perf_counter()
            line = compare_in_model(self.best_batch(), self.s.size, precision, 5, self.device)
            print(f"reductions {precision}: {line} (set up and run in {time.perf_counter() - t:.0f} s)", flush=True)
        for precision in self.s.dtypes:
            for batch in sorted(self.s.batches, reverse=True):  # the largest first: the likeliest best
                t = time.perf_counter()
                v = measure_forward(
                    model,
                    self.device,
                    precision,
                    batch,
                    self.s.size,
                    self.s.seconds,
                    self.s.min_iters,
                    compiled=self.s.compile_backend,
                )
                eager = bare.get((precision, batch, None))
                print(
                    f"bare forward {precision} batch {batch:4d} torch.compile({self.s.compile_backend}) "
                    f"{v:9.1f} img/s"
                    + (f" = {v / eager:.2f} x eager" if eager else "")
                    + f" (set up and run in {time.perf_counter() - t:.0f} s)",
                    flush=True,
                )

    def verdict(self) -> str:
        return make_verdict(self.found, self.s.device)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import describe_cpu, describe_gpu, describe_shm, describe_versions  # noqa: PLC0415
    from jobs import runtime  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code paths, in seconds")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in this order")
    p.add_argument("--dir", help="where to write the JPEGs and runs (default: the system's temp folder; local disk)")
    p.add_argument("--weights", type=Path, help="a VGG16 weights file the jobs load (default: random weights)")
    args = p.parse_args(argv)
    s = SMOKE if args.smoke else FULL
    runtime.keep_freed_memory()
    runtime.setup_logging()
    logging.getLogger("cnn_blackbox").setLevel(logging.WARNING)  # the jobs' warnings only, one line each
    print(describe_versions(), flush=True)
    print(describe_shm(), flush=True)
    print(describe_gpu(), flush=True)
    print(describe_cpu(), flush=True)
    print(f"settings: {'smoke (CPU, tiny)' if args.smoke else 'full'}, device {s.device}, deadline {s.deadline:.0f} s")
    if s.device == "cuda" and not torch.cuda.is_available():
        print("RESULT: no CUDA device here; run `make bench-gpu` on a GPU machine, or --smoke on this one")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=args.dir, ignore_cleanup_errors=True) as tmp:
        bench = Bench(s, Path(tmp), args.weights.resolve() if args.weights else None)
        for name in args.sections.split(","):
            bench.run(name)
        print(f"\ntotal {time.perf_counter() - bench.t0:.0f} s", flush=True)
        print(bench.verdict(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
