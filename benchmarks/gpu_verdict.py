"""bench_gpu's last line: the whole extract's img/s after start-up, each run against its own reference (with
attribution: the attributed forward; without: the bare forward), and what limits it, from what the sections measured.

The job's pipeline has two stages that run side by side: DataLoader workers (read, decode, preprocess, collate) and
the main process (pin + copy, forward, reductions, attribution, rows, Parquet), which does its parts one after the
other. The slower stage sets the pace: decode when the DataLoader alone is slower than the main process's parts per
image, the forward when the bare forward is; otherwise the main process's other serial work.
"""

from __future__ import annotations

MAIN_PARTS = ("copy", "forward", "reductions", "attribution", "rows", "parquet")


def make_verdict(found: dict, device: str) -> str:
    """The last line, from bench_gpu's findings: extract_<label>_<on|off> (rate: steady img/s, reference and
    reference_name: what it is compared with at its batch, batch, workers, precision, layers, attribution: the
    attributed layers or None), loader {workers: img/s}, parts {part: ms per image}. The run judged is the one with
    the default attribution (best settings, else default ones); the one without it is reported beside it."""
    on = found.get("extract_best_on") or found.get("extract_default_on")
    off = found.get("extract_default_off")
    run = on or off
    if not run:
        return "RESULT: the whole extract was not measured (see its section above)"
    loader, parts = found.get("loader", {}), found.get("parts")
    main_parts = [p for p in MAIN_PARTS if run["attribution"] or p != "attribution"]
    stages = {"main": 1000 / sum(parts[p] for p in main_parts) if parts else run["reference"]}
    if run["workers"] in loader:
        stages["decode"] = loader[run["workers"]]
    if min(stages, key=stages.get) == "decode":
        why = (
            f"decode: the DataLoader alone gives {stages['decode']:.0f} img/s at {run['workers']} workers "
            "(more workers, or decoding on the GPU)"
        )
    elif not parts:
        why = f"the forward ({run['reference_name']} {run['reference']:.0f} img/s; the per-part profile did not run)"
    else:
        main = sorted(((p, parts[p]) for p in main_parts), key=lambda kv: -kv[1])
        total = sum(v for _, v in main)
        what = ", ".join(f"{p} {v:.2f} ms/img ({v / total:.0%})" for p, v in main[:3])
        why = f"the main process's serial work, {stages['main']:.0f} img/s at most: {what}"
    shortfall = run["rate"] / min(stages.values())
    tail = f"; the steady run reached only {shortfall:.0%} of that" if shortfall < 0.8 else ""
    attributed = f"attribution {','.join(run['attribution'])}" if run["attribution"] else "no attribution"
    beside = ""
    if on and off:
        beside = f"; without attribution {off['rate']:.1f} img/s = {off['rate'] / off['reference']:.2f} x bare forward"
    return (
        f"RESULT: whole extract {run['rate']:.1f} img/s on {device} ({attributed}, {run['precision']}, batch "
        f"{run['batch']}, {run['workers']} workers, {run['layers']} layers; after start-up) = "
        f"{run['rate'] / run['reference']:.2f} x {run['reference_name']}{beside}; limited by {why}{tail}"
    )
