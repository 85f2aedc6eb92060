"""Bad input, damaged run directories and misbehaving servers (issue 15): each gets a one-line error or is
handled, and nothing on disk is lost, corrupted or leaks a secret."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llm2llm import UserError
from llm2llm.config import TeacherConfig
from llm2llm.teacher import Cache, OpenAIBackend, Teacher

KEY_ENV = "LLM2LLM_HOSTILE_KEY"


class EchoingServer:
    """A chat-completions server that fails every call with a 500 whose body echoes the request's headers
    (as some proxies do), and answers 401 to a request without a key."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                status = 500 if self.headers.get("authorization", "").removeprefix("Bearer ") not in ("", "not-needed") \
                    else 401
                body = json.dumps({"error": {"message": f"upstream failed; your request: {dict(self.headers)}"}})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = _reply

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echoing_server():
    server = EchoingServer()
    yield server
    server.close()


def test_a_key_echoed_by_the_server_is_redacted_from_stored_errors(echoing_server, tmp_path, monkeypatch):
    secret = "sk-very-secret-0123456789"
    monkeypatch.setenv(KEY_ENV, secret)
    cfg = TeacherConfig(backend="openai", base_url=echoing_server.url, model="m", api_key_env=KEY_ENV,
                        max_retries=0)
    teacher = Teacher(cfg, Cache(tmp_path / "c.sqlite"), OpenAIBackend(cfg))
    reply, = teacher.complete([{"messages": [{"role": "user", "content": "hi"}], "iteration": 0, "sample": 0}])
    assert "upstream failed" in reply["error"] and "authorization" in reply["error"]
    assert secret not in reply["error"] and "Bearer ***" in reply["error"]


def test_an_unset_key_variable_is_named(echoing_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    cfg = TeacherConfig(backend="openai", base_url=echoing_server.url, model="m", api_key_env=KEY_ENV)
    with pytest.raises(UserError, match=f"\\${KEY_ENV} is not set"):
        OpenAIBackend(cfg).preflight()


class JudgeBackend:
    """A teacher that, as judge, gives every text the label 'alarm' (40 prompt and 5 completion tokens a call)."""

    def complete(self, items, todo, params, calls):
        for i, _, _ in items:
            if i in todo and calls.start(i):
                calls.done(i, {"text": '{"label": "alarm"}', "prompt_tokens": 40, "completion_tokens": 5})


def test_the_judges_teacher_calls_count_in_metrics_and_the_budget(tmp_path):
    from llm2llm import augment
    from llm2llm.config import TaskConfig, build_config
    from llm2llm.judge import TeacherJudge
    from llm2llm.store import RunStore
    from llm2llm.tasks import make_task

    task = make_task(TaskConfig(type="classification"), [{"text": "x", "label": "alarm"}, {"text": "y", "label": "music"}])
    teacher = Teacher(TeacherConfig(), Cache(tmp_path / "c.sqlite"), JudgeBackend())
    store = RunStore(tmp_path / "run")
    new = [{"id": f"syn-{i}", "text": t, "label": label, "parent_id": "p"}
           for i, (t, label) in enumerate([("wake me at 5", "alarm"), ("play jazz", "music"), ("alarm at 9", "alarm")])]
    kept, rejected = augment.sifted(store, 0, TeacherJudge(task), (new, []), teacher)
    assert [ex["id"] for ex in kept] == ["syn-0", "syn-2"] and len(rejected) == 1
    calls = [{"reply": {"text": "", "prompt_tokens": 100, "completion_tokens": 30}}]  # the teacher stage's one call
    spent = augment.teacher_spending(store, 0, calls)
    assert spent["prompt_tokens"] == 100 + 3 * 40 and spent["completion_tokens"] == 30 + 3 * 5
    assert spent["judge_calls"] == 3 and spent["judge_prompt_tokens"] == 120
    # the next iteration's budget is rebuilt from metrics rows: the judge's spending is not forgotten
    cfg = build_config({"task": {"type": "classification"}, "data": {"train": "x", "test": "y"},
                        "teacher": {"budget_tokens": 10_000}})
    assert augment.spending(cfg, [{"iteration": 0, **spent}], 1).tokens == 100 + 30 + 3 * 45
    # resumed after the judge's stage: the same figures come from judge_stats.json
    assert augment.teacher_spending(RunStore(tmp_path / "run"), 0, calls) == spent


def run_cli(*args):
    from typer.testing import CliRunner

    from llm2llm.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_line_error(code, out, *parts):
    assert code == 2 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    for part in parts:
        assert part in out, out


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_naming_an_existing_file(tmp_path, intent_files):
    import yaml
    from conftest import config_dict

    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files, filters={"judge": "none"})))
    one_line_error(*run_cli("run", path, "--out", blocker), "a-file: exists and is not a directory")
    assert blocker.read_text() == "keep me"


def damaged_run(tmp_path, intent_files, name="run"):
    """A run dir as a run of the config at c.yaml leaves it after iteration 0 (no model kept)."""
    import yaml
    from conftest import config_dict
    from llm2llm.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files, filters={"judge": "none"})))
    run_dir = tmp_path / name
    (run_dir / "iter_000").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(load_config(path).model_dump(mode="json"), sort_keys=False))
    (run_dir / "metrics.jsonl").write_text('{"iteration": 0, "test_accuracy": 0.5}\n{"iteration": 1, "test_acc')
    (run_dir / "iter_000" / "pred_test.jsonl").write_text('{"id": "a", "correct": true}\n{"id": "b", "corr')
    (run_dir / "iter_000" / "teacher_stats.json").write_text('{"made": 3')
    return path, run_dir


def test_a_damaged_run_dir_is_named_before_anything_loads(tmp_path, intent_files):
    from llm2llm.config import load_config
    from llm2llm.store import RunStore

    path, run_dir = damaged_run(tmp_path, intent_files)
    before = snapshot(run_dir)
    config = load_config(path).model_dump(mode="json")
    with pytest.raises(UserError, match=r"metrics.jsonl:2: damaged \(invalid JSON.*remove that line"):
        RunStore(run_dir).open(config)
    (run_dir / "metrics.jsonl").write_text('{"iteration": 0, "test_accuracy": 0.5}\n')
    with pytest.raises(UserError, match=r"iter_000/pred_test.jsonl:2: damaged .*remove it and resume computes it"):
        RunStore(run_dir).open(config)
    (run_dir / "iter_000" / "pred_test.jsonl").unlink()
    with pytest.raises(UserError, match=r"teacher_stats.json: damaged"):
        RunStore(run_dir).open(config)
    (run_dir / "iter_000" / "teacher_stats.json").unlink()
    assert RunStore(run_dir).open(config) is True
    # through the command line: one line, exit 2, and the run dir as it was
    path, run_dir = damaged_run(tmp_path, intent_files, "again")
    one_line_error(*run_cli("resume", run_dir), "metrics.jsonl:2: damaged")
    one_line_error(*run_cli("run", path, "--out", run_dir), "metrics.jsonl:2: damaged")
    assert snapshot(run_dir) == before


def test_a_damaged_cache_is_named(tmp_path, intent_files):
    from llm2llm.config import load_config
    from llm2llm.store import RunStore

    path, run_dir = damaged_run(tmp_path, intent_files)
    (run_dir / "metrics.jsonl").write_text('{"iteration": 0}\n')
    (run_dir / "iter_000" / "pred_test.jsonl").unlink()
    (run_dir / "iter_000" / "teacher_stats.json").unlink()
    (run_dir / "cache.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    with pytest.raises(UserError, match="cache.sqlite: damaged"):
        RunStore(run_dir).open(load_config(path).model_dump(mode="json"))


def test_every_template_is_checked_before_anything_runs(tmp_path, intent_files):
    import yaml
    from conftest import config_dict
    from llm2llm.config import build_config
    from llm2llm.data import load_splits
    from llm2llm.tasks import make_task

    def load(**task):
        cfg = build_config(config_dict(*intent_files, task=task, filters={"judge": "none"}))
        return load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))

    with pytest.raises(UserError, match=r"train.jsonl:1: task.teacher_template uses \{tone\}, which is not a field"):
        load(teacher_template="Write {n} like {examples} in a {tone} voice")
    with pytest.raises(UserError, match=r"task.target_template uses \{gold\}"):
        load(target_template=" {gold}")
    # a field that the data has but the teacher's new examples will not: it would fail in iteration 1
    extra = write_rows(tmp_path / "extra.jsonl", [{"text": "wake me", "label": "alarm", "room": "bedroom"}])
    cfg = build_config(config_dict(extra, intent_files[1], task={"prompt_template": "{room}: {input}"}))
    with pytest.raises(UserError, match=r"task.prompt_template uses \{room\}, which the teacher's new examples lack"):
        load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    # from the command line: one line naming the field, exit 2, nothing written
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files, filters={"judge": "none"},
                                               task={"teacher_template": "{examples} {tone}"})))
    one_line_error(*run_cli("run", path, "--out", tmp_path / "run"), "task.teacher_template uses {tone}")
    assert not (tmp_path / "run").exists()


def write_rows(path, rows):
    from conftest import write_jsonl

    return write_jsonl(path, rows)


@pytest.mark.parametrize("template", ["{0}: {input}", "{}", "{input", "input}", "{input.upper}", "{input[0]}",
                                      "{input!r}", "{input:>10}"])
def test_templates_allow_plain_fields_only(tmp_path, intent_files, template):
    import yaml
    from conftest import config_dict

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files, task={"prompt_template": template})))
    one_line_error(*run_cli("run", path, "--out", tmp_path / "run"), "field 'task.prompt_template'")
    assert not (tmp_path / "run").exists()


def test_literal_braces_are_fine():
    from llm2llm.config import TaskConfig

    assert TaskConfig(type="classification", prompt_template='{{"text": "{input}"}}').prompt_template


@pytest.mark.parametrize("item", ["student.lr=[1,", "student.lr={", "task.description='x", "student.lr=*x",
                                  "task.description=\tx", "=5", ".lr=1", "student.=1", "student.lr"])
def test_malformed_set_values_in_run_and_resume(tmp_path, intent_files, item):
    path, run_dir = damaged_run(tmp_path, intent_files)
    (run_dir / "metrics.jsonl").write_text('{"iteration": 0}\n')
    before = snapshot(run_dir)
    code, out = run_cli("run", path, "--set", item, "--out", tmp_path / "new")
    one_line_error(code, out, "--set ")
    assert not (tmp_path / "new").exists()
    one_line_error(*run_cli("resume", run_dir, "--set", item), "--set ")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("section,field,value,message", [
    ("student", "batch_size", True, "expected a number"), ("student", "lr", True, "expected a number"),
    ("loop", "iterations", 2.0, "expected a whole number"), ("student", "gradient_checkpointing", 1, "true or false"),
    ("loop", "from_scratch", "yes", "true or false"), ("task", "description", 5, "valid string"),
    ("student", "model", 1.5, "valid string")])
def test_surprising_coercions_are_errors(intent_files, section, field, value, message):
    from conftest import config_dict
    from llm2llm.config import build_config

    with pytest.raises(UserError, match=f"field '{section}.{field}': .*{message}"):
        build_config(config_dict(*intent_files, **{section: {field: value}}))


def test_numbers_as_yaml_writes_them_still_work(intent_files):
    import yaml
    from conftest import config_dict
    from llm2llm.config import build_config

    tree = config_dict(*intent_files, student=yaml.safe_load("{lr: 2e-4, epochs: 1, lora_dropout: 0}"),
                       teacher=yaml.safe_load("{temperature: 1, top_p: 1, price_per_million: {prompt: 1}}"))
    cfg = build_config(tree)
    assert cfg.student.lr == 2e-4 and cfg.student.epochs == 1.0 and cfg.teacher.temperature == 1.0


class FlakyBackend:
    """Fails the calls whose prompt is in `fail`, answers the others; records what it was asked."""

    def __init__(self, fail=()):
        self.asked, self.fail = [], set(fail)

    def complete(self, items, todo, params, calls):
        for i, request, _ in items:
            if i in todo and calls.start(i):
                text = request["messages"][0]["content"]
                self.asked.append(text)
                calls.done(i, {"text": "", "error": "APIStatusError: 500", "prompt_tokens": 0, "completion_tokens": 0}
                           if text in self.fail else {"text": "re: " + text, "prompt_tokens": 3, "completion_tokens": 2})


def test_resume_asks_the_failed_calls_of_an_unfinished_teacher_stage_again(tmp_path):
    import io

    from rich.console import Console

    from llm2llm import loop
    from llm2llm.store import RunStore

    store, quiet = RunStore(tmp_path / "run"), Console(file=io.StringIO())
    requests = [{"parent": {"id": p}, "iteration": 0, "sample": 0, "messages": [{"role": "user", "content": p}]}
                for p in "abc"]

    def stage(backend):
        teacher = Teacher(TeacherConfig(), Cache(tmp_path / "c.sqlite"), backend)
        return loop.teacher_stage(store, 0, teacher, requests, quiet), backend.asked

    calls, asked = stage(FlakyBackend(fail={"b"}))
    assert asked == ["a", "b", "c"] and "error" in calls[1]["reply"]
    # killed before the replies were filtered: resume asks the failed call again, and only it
    calls, asked = stage(FlakyBackend())
    assert asked == ["b"] and [c["reply"]["text"] for c in calls] == ["re: a", "re: b", "re: c"]
    assert store.read_jsonl(0, "teacher_calls.jsonl") == calls
    # a finished stage (its replies filtered) is read back as it is: no call
    store.write_jsonl(0, "teacher_calls.jsonl", [*calls[:2], {**calls[2], "reply": {"error": "x", "text": ""}}])
    store.write_jsonl(0, "accepted.jsonl", [])
    calls, asked = stage(FlakyBackend())
    assert asked == [] and calls[2]["reply"]["error"] == "x"


class CharTokenizer:
    """One token per character: enough to check what is cut where."""

    def __call__(self, texts, add_special_tokens=False):
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=[[ord(c) for c in t] for t in texts])

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_long_rows_are_counted_and_long_prompts_shortened():
    from llm2llm.student import fitting, shorten

    def enc(prompt_len, answer_len, max_length):
        n = prompt_len + answer_len
        ids = list(range(n))[:max_length]
        return {"input_ids": ids, "labels": ([-100] * prompt_len + ids[prompt_len:])[:len(ids)], "cut": n > max_length}

    rows = [enc(5, 3, 10), enc(8, 5, 10), enc(2_000_000, 3, 10)]  # fits; answer cut; answer past max_length
    kept, counts = fitting(rows, 10)
    assert len(kept) == 2 and counts == {"cut_rows": 1, "dropped_rows": 1} and "cut" not in kept[0]
    with pytest.raises(UserError, match="student.max_length 10: no training example's answer fits"):
        fitting([rows[2]], 10)
    long = "Task: intent.\nText: " + "blah " * 400_000 + "\nLabel:"
    short, cut = shorten(CharTokenizer(), ["Text: hi\nLabel:", long], 40)
    assert short == "Text: hi\nLabel:" and cut.startswith("Task: intent.\nText: ") and cut.endswith("blah \nLabel:")
    assert len(cut) == 40 + len(" ... ")


def test_csv_with_a_byte_order_mark_and_a_directory_as_data(tmp_path, intent_files):
    from conftest import config_dict
    from llm2llm.config import build_config, DataConfig
    from llm2llm.data import load_splits, read_source
    from llm2llm.tasks import make_task

    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\nwake me up,alarm\n".encode("utf-8-sig"))
    source = DataConfig.model_validate({"train": str(path), "test": str(path)}).train
    assert read_source(source) == [(f"{path}:2", {"text": "wake me up", "label": "alarm"})]
    cfg = build_config(config_dict(tmp_path, intent_files[1]))
    with pytest.raises(UserError, match=f"{tmp_path}: is a directory"):
        load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
