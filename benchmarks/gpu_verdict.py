"""bench_gpu's last line: the whole extract's img/s and what limits it, from what the sections measured.

The job's pipeline has two stages that run side by side: DataLoader workers (read, decode, preprocess, collate) and
the main process (pin + copy, forward, reductions, attribution, rows, Parquet), which does its parts one after the
other. The slower stage sets the pace: decode when the DataLoader alone is slower than the main process's parts per
image, the forward when the bare forward is; otherwise the main process's other serial work.
"""

from __future__ import annotations

MAIN_PARTS = ("copy", "forward", "reductions", "attribution", "rows", "parquet")


def make_verdict(found: dict, device: str) -> str:
    """The last line, from bench_gpu's findings: extract_best or extract_default (rate, bare, batch, workers,
    precision, layers), loader {workers: img/s}, parts {part: ms per image}."""
    run = found.get("extract_best") or found.get("extract_default")
    if not run:
        return "RESULT: the whole extract was not measured (see its section above)"
    loader, parts = found.get("loader", {}), found.get("parts")
    stages = {"main": 1000 / sum(parts[p] for p in MAIN_PARTS) if parts else run["bare"]}
    if run["workers"] in loader:
        stages["decode"] = loader[run["workers"]]
    if min(stages, key=stages.get) == "decode":
        why = (
            f"decode: the DataLoader alone gives {stages['decode']:.0f} img/s at {run['workers']} workers "
            "(more workers, or decoding on the GPU)"
        )
    elif not parts:
        why = f"the forward (bare {run['bare']:.0f} img/s; the per-part profile did not run)"
    else:
        main = sorted(((p, parts[p]) for p in MAIN_PARTS), key=lambda kv: -kv[1])
        total = sum(v for _, v in main)
        what = ", ".join(f"{p} {v:.2f} ms/img ({v / total:.0%})" for p, v in main[:3])
        why = f"the main process's serial work, {stages['main']:.0f} img/s at most: {what}"
    shortfall = run["rate"] / min(stages.values())
    tail = f"; the run reached only {shortfall:.0%} of that (start-up, first batch)" if shortfall < 0.8 else ""
    return (
        f"RESULT: whole extract {run['rate']:.1f} img/s on {device} ({run['precision']}, batch {run['batch']}, "
        f"{run['workers']} workers, {run['layers']} layers) = {run['rate'] / run['bare']:.2f} x bare forward; "
        f"limited by {why}{tail}"
    )
