"""One reader of a finished run (analysis/store/run.py): the one-line refusals the report and the inspect page give,
config.yaml's keys read typed in one place with one error naming the key, the run's images found once for every
reader of one report, and the model the run used loaded through the shared call (analysis/model/choice.py)."""

from __future__ import annotations

import pytest

from analysis.config import ConfigError
from analysis.model.choice import load_chosen_model
from analysis.store import contract
from analysis.store import run as run_store
from analysis.store.manifest import IncompleteRunError
from analysis.store.run import DATASET_RUN, GONE, RunSourceError, read_finished_run
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from tests.helpers import write_image


@pytest.fixture
def run(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        write_image(data / f"cat.{i}.png", seed=i)
    return write_synthetic_run(tmp_path / "run", SyntheticRun(n_images=8, layers={"conv5_3": 8}, data=data))


def test_a_folder_that_is_no_finished_run_is_refused_in_one_line(run, tmp_path):
    # the inspect page reads run.json as it is; the report first refuses an unfinished run, naming what is missing
    with pytest.raises(ConfigError, match="RUN must be a finished dataset run"):
        read_finished_run(tmp_path, strict=False, what=DATASET_RUN)
    with pytest.raises(IncompleteRunError, match="no run.json and no manifest.json"):
        read_finished_run(tmp_path)
    (run / contract.RUN_JSON).write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="run.json cannot be read"):
        read_finished_run(run, strict=False)
    (run / contract.RUN_JSON).write_text('{"classes": ["cat"]}', encoding="utf-8")
    with pytest.raises(ConfigError, match="names no layers or no classes"):
        read_finished_run(run)
    assert read_finished_run(run, strict=False).meta == {"classes": ["cat"]}


def test_the_source_is_read_typed_and_a_bad_key_is_named(run):
    source = read_finished_run(run).source
    assert source.preprocessing.crop == 64 and source.preprocessing.resize == 73 and source.weights == "random"
    assert source.imagenet_classes == (("cat", 281, 285), ("dog", 151, 268)) and source.classes is None
    config = run / contract.CONFIG_YAML
    text = config.read_text(encoding="utf-8")
    for old, new, said in (
        ("image_size: 64", "image_size: x", "extract.image_size"),
        ("preprocess: imagenet", "preprocess: foo", "preprocessing 'foo' is unknown"),
        ("  weights: random\n", "", "extract.weights is missing"),
        ("extract:", "other:", "has no extract section"),
    ):
        config.write_text(text.replace(old, new), encoding="utf-8")
        with pytest.raises(RunSourceError, match=said):
            _ = read_finished_run(run).source
    config.write_text("extract: [", encoding="utf-8")
    with pytest.raises(RunSourceError, match=r"config.yaml cannot be read \(ParserError: [^\n]*\)$"):
        _ = read_finished_run(run).source  # one line
    config.unlink()
    with pytest.raises(RunSourceError, match="config.yaml cannot be read"):
        _ = read_finished_run(run).source


def test_the_runs_images_are_found_once(run, monkeypatch):
    calls = []
    real = run_store.find_images
    monkeypatch.setattr(run_store, "find_images", lambda data: calls.append(data) or real(data))
    finished = read_finished_run(run)
    finished.images.find()
    assert finished.images.read_bytes("cat.0.png") == (run.parent / "data" / "cat.0.png").read_bytes()
    assert finished.images.read_bytes("dog.1.jpg") is None and GONE == "not found in DATA any more"
    finished.images.find()
    assert calls == [str(run.parent / "data")]


def test_the_runs_model_loads_through_the_shared_call(run):
    loaded = load_chosen_model(read_finished_run(run).source, download=False)
    assert loaded.random and loaded.weights_id == read_finished_run(run).meta["weights"]["id"]
