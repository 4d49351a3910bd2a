"""bench_gpu's sections that run the real jobs: the whole extract (attribution off and on; default and best
settings), the tables of cpu and the device compared, and torchrun with two processes. A mixin of bench_gpu.Bench,
which holds the settings, the images, the model and what the sections found."""

from __future__ import annotations

import time


class JobSections:
    def section_extract(self) -> None:
        """The whole job (jobs.extract's parser and main) without attribution and with the default one, at the
        default settings, then with the best batch and workers when they differ; each compared with its own
        reference at its batch and precision (the bare forward; the attributed forward), at its steady rate (after
        its first unit: workers forking, cuDNN's heuristics and lazy loading are start-up, printed apart)."""
        from benchmarks.gpu_verdict import MAIN_PARTS  # noqa: PLC0415
        from jobs import runtime  # noqa: PLC0415

        loader, parts = self.found.get("loader", {}), self.found.get("parts", {})
        default_workers = runtime.pick_workers("auto", self.device)
        # As many images as the slower stage gets through in extract_seconds: decode, or the main process's parts
        expected = min(
            loader.get(default_workers, min(loader.values(), default=1e9)),
            1000 / sum(parts[p] for p in MAIN_PARTS) if parts else 1e9,
        )
        n = min(len(list(self.data.iterdir())), max(64, int(expected * self.s.extract_seconds)))
        best = (self.best_batch(), max(loader, key=loader.get, default=default_workers))
        default = ["--batch-size", str(self.job_batch())]  # batch_size auto here (the smoke run's tiny one on a CPU)
        runs = [("default", False, default), ("default", True, default)]
        if best != (self.job_batch(), default_workers):
            runs.append(("best", True, ["--batch-size", str(best[0]), "--workers", str(best[1])]))
        for label, attributed, extra in runs:
            self._measure_extract(n, label, attributed, extra)

    def _measure_extract(self, n: int, label: str, attributed: bool, extra: list[str]) -> None:
        from benchmarks.gpu_forward import measure_attributed, measure_forward  # noqa: PLC0415
        from benchmarks.gpu_jobs import link_subset, read_steady_rate, run_extract  # noqa: PLC0415

        data, out = link_subset(self.data, self.tmp / f"extract-{n}", n), self.tmp / f"out-{label}-{attributed}"
        unit = min(2048, max(1, n // 4))  # the job's units, and at least 4 of them: the first is start-up
        extra = [*extra, "--unit-size", str(unit)] + ([] if attributed else ["--attribution-layers", "none"])
        t = time.perf_counter()
        meta = run_extract(self.job_args(data, out, "--device", self.s.device, *extra))
        rate, startup = read_steady_rate(out, time.perf_counter() - t)
        measure, name = (measure_attributed, "attributed forward") if attributed else (measure_forward, "bare forward")
        batch, precision = meta["batch_size"], meta["precision"]
        ref = measure(self.model, self.device, precision, batch, self.s.size, self.s.seconds, self.s.min_iters)
        layers = meta["attribution"]["layers"] if meta.get("attribution") else None
        self.found[f"extract_{label}_{'on' if attributed else 'off'}"] = dict(
            rate=rate,
            reference=ref,
            reference_name=name,
            startup=startup,
            batch=batch,
            workers=meta["workers"],
            precision=precision,
            layers=len(meta["layers"]),
            attribution=layers,
        )
        print(
            f"whole extract, {label} settings, attribution {','.join(layers) if layers else 'off'}: {rate:.1f} img/s "
            f"after its first unit ({n} images in units of {unit}, {precision}, batch {batch}, {meta['workers']} "
            f"workers, {len(meta['layers'])} layers; {meta['timings']['images_per_s']:.1f} img/s with it, as run.json "
            f"counts); start-up and finish {startup:.1f} s on top; {name} at that batch {ref:.1f} img/s; ratio "
            f"{rate / ref:.3f}; {meta.get('reductions', 'eager')} reductions (compiled in "
            f"{meta['timings'].get('compile_seconds', 0):.1f} s)",
            flush=True,
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
            self.job_args(
                data,
                out,
                "--device",
                self.s.device.split(":")[0],
                "--unit-size",
                str(max(1, n // 8)),
                "--set",
                "share_gpus=true",  # two processes, one GPU: asked for (unasked, the job refuses to start)
            ),
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
