"""Fuzz: random configs and data rows never crash llm2llm. Every case ends with exit 2 and a one-line error that
leaves the run dir as it was, or passes every check and reaches model loading (stubbed out here: no model is
loaded, so a few hundred cases take seconds)."""
import json
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis", reason="install the test extra: pip install -e '.[test]'")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

from llm2llm import judge, student  # noqa: E402
from llm2llm.cli import app  # noqa: E402

# the fields fuzzed; the teacher's backend and URL, hub datasets and accelerate stay out (they reach the network)
FIELDS = {
    "task": ["type", "checker", "description", "input_field", "output_field", "labels", "prompt_template",
             "target_template", "teacher_template", "max_new_tokens", "stop", "choices_field"],
    "student": ["model", "epochs", "lr", "batch_size", "max_length", "lora_r", "finetune", "seed", "lora_dropout",
                "gradient_checkpointing", "lora_target_modules", "eval_batch_size"],
    "teacher": ["temperature", "top_p", "max_tokens", "examples_per_call", "shots", "budget_tokens", "budget_cost",
                "price_per_million", "samples_per_example", "response_format", "api_key_env"],
    "data": ["seed_size", "seed_fraction", "test_size", "sampling_seed", "train", "test"],
    "loop": ["iterations", "from_scratch", "parents", "augment", "random_counts"],
    "filters": ["near_duplicate_threshold", "leakage_ngram", "judge", "leakage_action"],
    "output": ["keep_models"],
    "bogus": ["x"],
}
WORDS = ["classification", "math", "choice", "custom", "label", "number", "exact", "text", "label", "lora", "full",
         "none", "teacher", "embedding", "auto", "seed", "all", "random", "wrong", "drop", "report", "last",
         "{input}", "{output} {labels}", "{0}", "{input", "{input.upper}", "{nope}", "{examples} {n} {format}",
         "~nobody-here/x.jsonl", "", " ", "\t", "\x00", "é", "{{}}"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True),
                    st.sampled_from(WORDS), st.text(string.printable + "é{}", max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(["prompt", "path", "a"]), inner,
                                                                       max_size=2)), max_leaves=4)
mutations = st.lists(st.sampled_from(sorted(FIELDS)).flatmap(
    lambda section: st.tuples(st.just(section), st.sampled_from(FIELDS[section]), values)), max_size=3)
cells = st.one_of(st.sampled_from(["wake me", "play jazz", "alarm", "music", "#### 4", ""]), scalars)
rows = st.lists(st.one_of(
    st.fixed_dictionaries({"text": cells, "label": cells}),
    st.dictionaries(st.sampled_from(["text", "label", "id", "question", "answer", "endings"]), cells, max_size=3),
    st.text(max_size=20).map(lambda t: ("RAW", t))), max_size=5)


class ReachedModels(Exception):
    """Every check passed: the run got as far as loading the student."""


class StubEmbeddingJudge:
    seed_agreement = None

    def __init__(self, *args):
        pass


def write_rows(path: Path, items) -> None:
    lines = [item[1] if isinstance(item, tuple) else json.dumps(item) for item in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def base_tree(folder: Path) -> dict:
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    good = [{"text": t, "label": label} for t, label in [("wake me at six", "alarm"), ("play some jazz", "music"),
                                                           ("set an alarm", "alarm"), ("put on a song", "music")]]
    write_rows(train, good)
    write_rows(test, good[:2])
    return {"task": {"type": "classification"}, "data": {"train": str(train), "test": str(test)},
            "filters": {"judge": "none"}}


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=mutations, train_rows=st.one_of(st.none(), rows), garbage=st.one_of(st.none(), st.text(max_size=8)),
       existing=st.booleans())
def test_random_configs_and_rows_exit_0_or_2_and_leave_the_run_dir_alone(mutations, train_rows, garbage, existing):
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(student, "load", lambda *a, **k: (_ for _ in ()).throw(ReachedModels()))
        mp.setattr(judge, "EmbeddingJudge", StubEmbeddingJudge)
        folder = Path(tmp)
        tree = base_tree(folder)
        if train_rows is not None:
            write_rows(folder / "train.jsonl", train_rows)
        for section, field, value in mutations:
            if not isinstance(tree.get(section), dict):
                tree[section] = {}
            tree[section][field] = value
        text = yaml.safe_dump(tree, allow_unicode=True) + (garbage or "")
        (folder / "c.yaml").write_text(text, encoding="utf-8")
        out = folder / "run"
        if existing:  # a run dir of another config: whatever happens, it must stay as it was
            out.mkdir()
            (out / "config.yaml").write_text(yaml.safe_dump({"task": {"type": "math"}}))
            (out / "metrics.jsonl").write_text('{"iteration": 0}\n')
        before = snapshot(out)
        result = CliRunner().invoke(app, ["run", str(folder / "c.yaml"), "--out", str(out)])
        event("passed every check" if isinstance(result.exception, ReachedModels) else "exit 2")
        if isinstance(result.exception, ReachedModels):
            assert not existing, "a different config's run dir was taken over"
            return
        assert result.exit_code == 2, (text, result.output, repr(result.exception))
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith("error: "), result.output
        assert snapshot(out) == before, text
