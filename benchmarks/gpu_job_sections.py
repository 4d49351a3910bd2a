"""bench_gpu's sections that run the real jobs: the whole extract (default and best settings), the tables of cpu
and the device compared, and torchrun with two processes. A mixin of bench_gpu.Bench, which holds the settings,
the images, the model and what the sections found."""

from __future__ import annotations

import time


class JobSections:
    def section_extract(self) -> None:
        from benchmarks.gpu_forward import measure_forward  # noqa: PLC0415
        from benchmarks.gpu_jobs import link_subset, run_extract  # noqa: PLC0415
        from benchmarks.gpu_verdict import MAIN_PARTS  # noqa: PLC0415
        from jobs import runtime  # noqa: PLC0415

        loader, parts = self.found.get("loader", {}), self.found.get("parts", {})
        default_workers = runtime.pick_workers("auto", self.device)
        # As many images as the slower stage gets through in extract_seconds: decode, or the main process's parts
        expected = min(
            loader.get(default_workers, min(loader.values(), default=1e9)),
            1000 / sum(parts[p] for p in MAIN_PARTS) if parts else 1e9,
        )
        n = max(64, min(self.s.images, int(expected * self.s.extract_seconds)))
        data = link_subset(self.data, self.tmp / f"extract-{n}", n)
        best_workers = max(loader, key=loader.get, default=default_workers)
        runs = [("default", []), ("best", ["--batch-size", str(self.best_batch()), "--workers", str(best_workers)])]
        for label, extra in runs:
            meta = run_extract(self.job_args(data, self.tmp / f"out-{label}", "--device", self.s.device, *extra))
            rate, batch = meta["timings"]["images_per_s"], int(extra[1]) if extra else self.config().batch_size
            ref = measure_forward(
                self.model, self.device, meta["precision"], batch, self.s.size, self.s.seconds, self.s.min_iters
            )
            self.found[f"extract_{label}"] = dict(
                rate=rate,
                bare=ref,
                batch=batch,
                workers=meta["workers"],
                precision=meta["precision"],
                layers=len(meta["layers"]),
            )
            print(
                f"whole extract {label:7s}: {rate:8.1f} img/s on {n} images ({meta['precision']}, batch {batch}, "
                f"{meta['workers']} workers, {len(meta['layers'])} layers, attribution "
                f"{','.join(meta['attribution']['layers']) if meta.get('attribution') else 'none'}); bare forward "
                f"at that batch {ref:.1f} img/s; ratio {rate / ref:.3f}"
            )

    def section_compare(self) -> None:
        from benchmarks.gpu_jobs import compare_runs, link_subset, run_extract  # noqa: PLC0415

        data = link_subset(self.data, self.tmp / "compare", self.s.compare_images)
        out = {}
        for device, precision in (("cpu", "fp32"), (self.s.device, "fp32"), (self.s.device, "bf16")):
            out[(device, precision)] = self.tmp / f"cmp-{device}-{precision}"
            run_extract(
                self.job_args(
                    data, out[(device, precision)], "--device", device, "--precision", precision, "--workers", "0"
                )
            )
        for precision in ("fp32", "bf16"):
            diff = compare_runs(out[("cpu", "fp32")], out[(self.s.device, precision)])
            print(
                f"{self.s.device} {precision} vs cpu fp32 on {self.s.compare_images} images, max |diff| / max "
                "|cpu| per table: "
                + "  ".join(f"{k} {v:.2e}" for k, v in diff.items() if k != "pred")
                + f"  predicted class differs for {diff['pred']:.1%}"
            )

    def section_torchrun(self) -> None:
        from analysis.store import manifest  # noqa: PLC0415
        from benchmarks.gpu_jobs import link_subset, run_torchrun  # noqa: PLC0415
        from jobs import finalize  # noqa: PLC0415

        n = self.s.torchrun_images
        data, out = link_subset(self.data, self.tmp / "torchrun", n), self.tmp / "out-torchrun"
        t = time.perf_counter()
        r = run_torchrun(
            self.job_args(data, out, "--device", self.s.device.split(":")[0], "--unit-size", str(max(1, n // 8))),
            2,
            self.s.budgets["torchrun"] - 10,
        )
        if r.returncode != 0:
            raise RuntimeError(f"torchrun exited with {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
        manifest.check_complete(out)
        code = finalize.main(finalize.parse(["--run", str(out)]))  # the last shard wrote run.json: "already"
        summary, wrote = finalize.finalize_run(out)
        print(
            f"torchrun 2 processes on one {self.s.device}: {n} images in {time.perf_counter() - t:.1f} s, complete "
            f"({summary['counts']['found']} found, {len(summary['shards']['processes'])} processes); process "
            "group: none (the shards share only files, so neither nccl nor gloo is used); "
            f"jobs.finalize exit {code}, run.json written by the shards {not wrote}"
        )
        if code != 0 or wrote or summary["counts"]["found"] != n:
            raise RuntimeError(f"jobs.finalize exited with {code}, wrote run.json: {wrote}")
