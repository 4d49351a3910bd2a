"""Dataset checks (dataset_issues.parquet): planted copies, misfiled images and drawings among real photos, found
through the real extract."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.config import ConfigError, make_config, read_config_section
from analysis.stats import dataset_issues
from analysis.store import blocks, contract, tables
from analysis.store.run import read_finished_run
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from jobs import extract, report
from jobs.config import DatasetIssuesConfig, ExtractConfig, ReportConfig
from tests.browser import CHROMIUM, needs_chromium, parse
from tests.planted import REAL_PHOTOS, write_planted_dataset

C = contract
HOSTILE = ("<img src=x onerror=alert(1)>.jpg", "' onmouseover='alert(2)' x='.jpg")


def issues_config(**values) -> DatasetIssuesConfig:
    return make_config(DatasetIssuesConfig, {**read_config_section(None, "report_qa"), **values})


def read_issues(out: Path) -> tuple[pd.DataFrame, dict]:
    path = out / C.DATASET_ISSUES
    return pd.read_parquet(path), json.loads(pq.read_schema(path).metadata[C.METADATA_KEY])


def write_issues(
    run: Path, config: DatasetIssuesConfig | None = None, out: Path | None = None
) -> tuple[pd.DataFrame, dict]:
    meta = tables.read_run_json(run)
    predictions = tables.read_predictions(run, meta["classes"])
    out = out or run / C.REPORT_DIR
    report.write_dataset_issues(config or issues_config(), read_finished_run(run, strict=False), predictions, out)
    return read_issues(out)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    if not REAL_PHOTOS.is_dir():
        pytest.skip(f"the real photos are not at {REAL_PHOTOS} (a fresh clone has no ../shared)")
    data = tmp_path_factory.mktemp("data")
    plan = write_planted_dataset(data)
    (data / "Cat" / "broken.jpg").write_bytes((data / "Cat" / "2.jpg").read_bytes()[:300])  # a row, no features
    for name in HOSTILE:  # byte-identical copies under hostile names: shown in the section
        (data / "Dog" / name).write_bytes((data / "Dog" / "5.jpg").read_bytes())
    plan.exact.append(("Dog/5.jpg", *(f"Dog/{name}" for name in HOSTILE)))
    run = tmp_path_factory.mktemp("run") / "out"
    extract.main(
        make_config(
            ExtractConfig,
            {
                **read_config_section(None, "extract"),
                "data": str(data),
                "out": str(run),
                "weights": "random",
                "image_size": 64,
                "layers": ["conv5_3"],
                "attribution_layers": None,
                "device": "cpu",
                "precision": "fp32",
                "batch_size": 8,
                "workers": 0,
                "download": False,
                "progress": False,
            },
        )
    )
    report.main(
        make_config(
            ReportConfig,
            {
                **read_config_section(None, "report"),
                "dataset_issues": read_config_section(None, "report_qa"),
                "run": str(run),
                "layers": ["conv5_3"],
                "device": "cpu",
                "top_channels": 1,
                "top_images": 2,
                "mistakes": 2,
                "thumbnail": 64,
                "progress": False,
            },
        )
    )
    issues, meta = read_issues(run / C.REPORT_DIR)
    return data, plan, run, issues, meta


def of(issues: pd.DataFrame, issue: str) -> pd.DataFrame:
    return issues[issues[C.ISSUE] == issue].sort_values(C.ISSUE_RANK)


@pytest.mark.slow
def test_sha256_is_the_files_hash(planted):
    data, _, run, _, _ = planted
    pred = pd.read_parquet(run / C.PREDICTIONS)
    assert len(pred) == len(list(data.rglob("*.*")))
    for image_id, digest in zip(pred[C.IMAGE_ID], pred[C.SHA256]):
        assert digest == hashlib.sha256((data / image_id).read_bytes()).hexdigest(), image_id
    assert (pred.loc[pred[C.IMAGE_ID] == "Cat/broken.jpg", C.STATUS] == C.STATUS_ERROR).all()


@pytest.mark.slow
def test_table_follows_the_contract_and_says_how(planted):
    _, _, _, issues, meta = planted
    assert tuple(issues.columns) == C.DATASET_ISSUES_COLUMNS
    assert set(issues[C.ISSUE]) <= set(C.ISSUES)
    config = issues_config()
    assert meta["near_duplicate_bits"] == config.near_duplicate_bits and "Hamming" in meta["near_duplicate_measured"]
    assert meta["similar_scene_ratio"] == config.similar_scene_ratio and "ratio" in meta["similar_scene_measured"]
    assert "pHash" in meta["representation"] and meta["search"] == "exact" and meta["layer"] == "conv5_3"
    assert set(meta["library"]) == {"cleanlab", "scikit-learn"}
    assert meta["counts"] == {i: int((issues[C.ISSUE] == i).sum()) for i in C.ISSUES}
    for _, rows in issues.groupby(C.ISSUE):
        assert list(rows[C.ISSUE_RANK]) == list(range(1, len(rows) + 1))


@pytest.mark.slow
def test_byte_identical_copies_are_groups(planted):
    _, plan, _, issues, _ = planted
    exact = of(issues, C.ISSUE_EXACT_DUPLICATE)
    groups = {frozenset(g[C.IMAGE_ID]) for _, g in exact.groupby(C.GROUP)}
    assert groups == {frozenset(pair) for pair in plan.exact}
    assert (exact[C.SCORE] == 1).all() and not exact[C.LABELS_DIFFER].any()


@pytest.mark.slow
def test_resized_copies_are_pairs_and_differing_labels_come_first(planted):
    _, plan, _, issues, _ = planted
    near = of(issues, C.ISSUE_NEAR_DUPLICATE)
    pairs = {frozenset(g[C.IMAGE_ID]) for _, g in near.groupby(C.PAIR)}
    want = {frozenset(p) for p in plan.near} | {
        frozenset(p) for a, b, c in plan.swapped for p in ((a, b), (a, c), (b, c))
    }
    assert pairs == want  # every planted pair, and no two distinct photos, drawings or identical files
    for _, g in near.groupby(C.PAIR):
        assert set(g[C.PARTNER]) == set(g[C.IMAGE_ID]) and (g[C.HAMMING] <= issues_config().near_duplicate_bits).all()
        assert g[C.LABELS_DIFFER].iloc[0] == (g[C.LABEL].nunique() > 1)
    differ = near[C.LABELS_DIFFER].to_numpy()
    assert differ.any() and not np.any(np.diff(differ.astype(int)) > 0)  # all differing pairs before the others


@pytest.mark.slow
def test_misfiled_images_rank_first_among_label_issues(planted):
    _, plan, _, issues, _ = planted
    label = of(issues, C.ISSUE_LABEL)
    misfiled = {c for _, _, c in plan.swapped}
    assert set(label[C.IMAGE_ID].head(len(misfiled))) == misfiled
    assert label[C.LABEL_SCORE].is_monotonic_increasing
    np.testing.assert_allclose(label[C.SCORE], 1 - label[C.LABEL_SCORE])


@pytest.mark.slow
def test_drawings_are_the_outliers(planted):
    _, plan, _, issues, _ = planted
    outliers = of(issues, C.ISSUE_OUTLIER)
    assert set(outliers[C.IMAGE_ID].head(len(plan.odd))) == set(plan.odd)
    assert outliers[C.OUTLIER_SCORE].is_monotonic_increasing


@pytest.mark.slow
def test_approximate_search_finds_the_same_pairs(planted):
    _, _, run, issues, _ = planted
    approx, meta = write_issues(run, issues_config(exact_max_images=0, approx_dims=4), run / "approx")
    assert meta["search"].startswith("approximate")
    for issue in (C.ISSUE_EXACT_DUPLICATE, C.ISSUE_NEAR_DUPLICATE, C.ISSUE_SIMILAR_SCENE):
        assert set(of(approx, issue)[C.IMAGE_ID]) == set(of(issues, issue)[C.IMAGE_ID])


@pytest.mark.slow
def test_section_shows_the_worst_cases_escaped_and_linked(planted):
    _, plan, run, issues, _ = planted
    text, c = parse(run / C.REPORT_DIR / C.INDEX_HTML)
    section = text[text.index("id='checks'") : text.index("<h2", text.index("id='checks'"))]
    for name in HOSTILE:
        assert name not in text and any(name in t for t in c.text)  # shown, as text only
    assert not [a for _, attrs in c.tags for a in attrs if a.lower().startswith("on")]
    assert not any(tag == "img" and attrs.get("src") == "x" for tag, attrs in c.tags)
    links = [a["href"] for tag, a in c.tags if tag == "a" and a.get("href", "").startswith("#image=")]
    misfiled = [m for _, _, m in plan.swapped]
    assert {unquote(h[len("#image=") :]) for h in links} >= set(misfiled) | set(plan.odd) | {
        f"Dog/{name}" for name in HOSTILE
    }
    thumbs = {a["alt"]: a["src"] for tag, a in c.tags if tag == "img" and a.get("alt") in misfiled}
    assert set(thumbs) == set(misfiled) and all((run / C.REPORT_DIR / unquote(t)).is_file() for t in thumbs.values())
    first_pair = issues[(issues[C.ISSUE] == C.ISSUE_NEAR_DUPLICATE) & (issues[C.PAIR] == 1)]
    assert first_pair[C.LABELS_DIFFER].all() and "labels differ" in section
    near = section[section.index("<h3>near duplicates") : section.index("<h3>similar scenes")]
    assert near.index("labels differ") < near.index("pair 2")


@pytest.mark.slow
@needs_chromium
def test_a_link_in_the_section_opens_the_image_card(planted):
    sync = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    _, plan, run, _, _ = planted
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = []
        tab.on("pageerror", lambda e: problems.append(str(e)))
        tab.on("dialog", lambda d: (problems.append("dialog " + d.message), d.dismiss()))
        tab.goto((run / C.REPORT_DIR / C.INDEX_HTML).resolve().as_uri())
        tab.click("#checks")  # the section is closed until its heading is clicked
        for image_id in (plan.odd[0], f"Dog/{HOSTILE[0]}"):
            tab.locator(f"details:has(#checks) a[href='#image={quote(image_id, safe='')}']").first.click()
            assert tab.inner_text("#card h3") == image_id
        browser.close()
    assert problems == []


def test_unlabeled_run_gets_duplicates_and_outliers_only(tmp_path):
    run = write_synthetic_run(
        tmp_path / "run", SyntheticRun(n_images=80, layers={"conv5_3": 32}, labeled=False, n_errors=3)
    )
    issues, meta = write_issues(run)
    assert not (issues[C.ISSUE] == C.ISSUE_LABEL).any() and issues[C.LABEL_SCORE].isna().all()
    assert any("label" in note for note in meta["notes"]) and meta["n_images"] == 77


def test_run_without_sha256_and_checks_off(tmp_path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_images=40, layers={"conv5_3": 8}))
    ids, x = blocks.read_layer_means(run, "conv5_3")
    pred = tables.read_predictions(run, ["cat", "dog"]).drop(columns=[C.SHA256]).set_index(C.IMAGE_ID)
    found = dataset_issues.compute_dataset_issues(
        ids, x, pred, ["cat", "dog"], dataset_issues.Settings(12, 0.8, 10, 100, 8, 1 << 20)
    )
    assert any("sha256" in note for note in found.meta["notes"])
    (run / C.REPORT_DIR).mkdir()
    (run / C.REPORT_DIR / C.DATASET_ISSUES).write_bytes(b"an earlier report's table")
    report.write_dataset_issues(
        issues_config(enabled=False), read_finished_run(run, strict=False), pred.reset_index(), run / C.REPORT_DIR
    )
    assert not (run / C.REPORT_DIR / C.DATASET_ISSUES).exists()


def test_bad_report_qa_values_fail_in_one_line():
    for key, value in (
        ("near_duplicate_bits", 65),
        ("similar_scene_ratio", 1.5),
        ("neighbours", 0),
        ("layer", "conv9_9"),
        ("enabled", "yes"),
    ):
        with pytest.raises(ConfigError, match=f"report_qa.{key}"):
            issues_config(**{key: value})
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        issues_config(nope=1)
    cfg = report.parse(["--run", "x", "--set", "report_qa.neighbours=5", "--set", "top_images=3"])
    assert cfg.dataset_issues.neighbours == 5 and cfg.top_images == 3
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        report.parse(["--run", "x", "--set", "report_qa.nope=5"])


def test_checks_layer_follows_what_the_run_recorded(tmp_path):
    """report_qa.layer auto: a run of conv4_3 alone is checked at conv4_3; a layer named but not recorded is refused."""
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_images=40, layers={"conv3_3": 16, "conv4_3": 24}))
    issues, meta = write_issues(run)
    assert meta["layer"] == "conv4_3" and meta["n_images"] == 40
    with pytest.raises(ConfigError, match="report_qa.layer: 'conv5_3' was not recorded by this run; it has conv3_3"):
        write_issues(run, issues_config(layer="conv5_3"))
