"""Concepts: what the network sees for each class, as k parts of one layer's activations (CRAFT's NMF), with every
image's presence, peak and contribution to each class logit (docs/concepts.md).

python -m jobs.concepts --run OUT [--out DIR] [--device cpu] [--config YAML] [--set key=value]
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from analysis.concepts.stage import ConceptResult, ConceptSettings, compute_concepts, write_concept_tables
from analysis.config import ConfigError, make_config
from analysis.data.discovery import DataError
from analysis.stats.groups import make_groups
from analysis.stats.recompute import RecomputeError, RunModel, load_run_model
from analysis.store import concept_contract as cc
from analysis.store import contract, tables
from analysis.store.run import FinishedRun, read_finished_run
from jobs import cli, runtime
from jobs.config import ConceptsConfig, ConceptsJobConfig

log = logging.getLogger("cnn_blackbox")


def main(cfg: ConceptsJobConfig) -> int:
    t0 = time.perf_counter()
    cli.check_utf8_path("RUN", cfg.run)
    finished = read_finished_run(cfg.run)  # an unfinished (sharded) run is refused, naming the shards still missing
    out = tables.report_dir(finished.path, cfg.out)
    cli.check_utf8_path("--out", out)
    device = runtime.pick_device(cfg.concepts.device)
    runtime.use_exact_fp32(device, str(finished.meta.get("precision") or "fp32"))
    model = load_model(finished)  # refused now, in one line, when the run's weights or DATA are gone

    # 1. Which class each image counts for: its label, or on an unlabeled run its predicted class.
    classes = tuple(finished.meta["classes"])
    predictions = tables.read_predictions(finished.path, classes)
    groups = make_groups(predictions, classes)

    # 2. Each class's concepts from a sample, then every ok image projected on them; 3. the two tables.
    settings = make_settings(cfg.concepts)
    log.info(
        "concepts at %s: %d per class, from up to %d images per class, on %s",
        settings.layer,
        settings.concepts,
        settings.images_per_class,
        device,
    )
    bars = ProgressBars(cfg.progress)
    try:
        result = compute_concepts(finished, predictions, groups, settings, device, bars, model=model)
    finally:
        bars.close()
    for note in result.notes:
        log.warning("concepts: %s", note)
    paths = write_concept_tables(out, result)
    for line in describe_classes(result, settings.layer):
        log.info("%s", line)
    log.info("concepts written in %.1f s: %s", time.perf_counter() - t0, ", ".join(str(p) for p in paths))
    return 0


def make_settings(cfg: ConceptsConfig) -> ConceptSettings:
    return ConceptSettings(cfg.layer, cfg.concepts, cfg.images_per_class, cfg.batch_size, cfg.seed)


def load_model(run: FinishedRun) -> RunModel:
    """The run's model, and its DATA listed; a ConfigError naming what is gone."""
    try:
        model = load_run_model(run)
        model.images.find()
    except RecomputeError as e:
        raise ConfigError(f"run {str(run.path)!r}: {e}") from None
    except DataError as e:
        raise ConfigError(f"run {str(run.path)!r}: the run's DATA cannot be read any more: {e}") from None
    return model


def describe_classes(result: ConceptResult, layer: str) -> list[str]:
    """One line per class with concepts, e.g. "cat: 8 concepts at conv5_3 from 2,000 of 12,500 images,
    reconstruction error 0.41; the first concept's share 23%"."""
    lines = []
    for cls, rows in result.concepts.groupby(contract.CLASS, sort=False):
        top = rows.iloc[0]
        share = top[cc.SHARE]
        lines.append(
            f"{cls}: {len(rows)} concepts at {layer} from {top[cc.N_SAMPLE]:,} of {top[cc.N_IMAGES]:,} images, "
            f"reconstruction error {top[cc.RECONSTRUCTION_ERROR]:.2f}; the first concept's share "
            + ("n/a" if share != share else f"{share:.0%}")
        )
    return lines


class ProgressBars:
    """progress(what, done, total) of compute_concepts as one tqdm bar per pass."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        bar = self.bars.get(what)
        if bar is None:  # a new pass: the last one is over
            self.close()
            bar = self.bars[what] = tqdm(total=total, desc=what, unit="img", disable=not self.enabled, file=sys.stderr)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def parse(argv: list[str] | None = None) -> ConceptsJobConfig:
    p = cli.ArgumentParser(prog="python -m jobs.concepts", description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a finished extract output folder (the OUT holding run.json)")
    p.add_argument("--out", help="where the tables go (default RUN/report)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    cli.add_config_args(p)
    args = p.parse_args(argv)
    concepts = cli.resolve_config(ConceptsConfig, "concepts", args, {"device": args.device})
    if not args.run:
        raise ConfigError(
            "run: RUN is required: pass --run runs/<name>, the OUT of an extract run (make concepts RUN=runs/<name>)"
        )
    return make_config(
        ConceptsJobConfig, {"run": args.run, "out": args.out, "progress": args.progress, "concepts": concepts}
    )


if __name__ == "__main__":
    runtime.setup_logging()
    runtime.keep_freed_memory()
    sys.exit(cli.run_main(parse, main, "concepts"))
