import yaml
from typer.testing import CliRunner

from conftest import config_dict, write_jsonl
from llm2llm.cli import app

runner = CliRunner()


def run_cli(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_bad_inputs_exit_2_with_one_line(tmp_path, intent_files):
    good = config_dict(*intent_files)
    bad_label = write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "label": "alarm"}, {"text": "y", "label": "pizza"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9", "label": "alarm"}\n')
    files = {name: write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in {
        "badjson": ['{"text": "a", "label": "alarm"}', '{"text": oops}'],
        "nofield": [{"text": "a", "label": "alarm"}, {"label": "alarm"}],
        "wrongtype": [{"text": ["a"], "label": "alarm"}],
        "dupids": [{"id": "x", "text": "a", "label": "alarm"}, {"id": "x", "text": "b", "label": "alarm"}],
    }.items()}
    cases = {
        "empty_file": (config_dict(empty, intent_files[1]), "empty.jsonl: no rows"),
        "invalid_json": (config_dict(files["badjson"], intent_files[1]), "badjson.jsonl:2: invalid JSON"),
        "missing_field": (config_dict(files["nofield"], intent_files[1]), "nofield.jsonl:2: missing field 'text'"),
        "wrong_type": (config_dict(files["wrongtype"], intent_files[1]), "wrongtype.jsonl:1: field 'text'"),
        "duplicate_ids": (config_dict(files["dupids"], intent_files[1]), "dupids.jsonl:2: duplicate id 'x'"),
        "non_utf8": (config_dict(latin, intent_files[1]), "latin.jsonl:1: not valid UTF-8"),
        "negative_iterations": ({**good, "loop": {"iterations": -1}}, "field 'loop.iterations'"),
        "unknown_task": ({**good, "task": {"type": "poetry"}}, "field 'task.type'"),
        "unknown_field": ({**good, "loop": {"iterationz": 2}}, "field 'loop.iterationz'"),
        "zero_iterations": ({**good, "loop": {"iterations": 0}}, "field 'loop.iterations'"),
        "missing_file": (config_dict(tmp_path / "none.jsonl", intent_files[1]), "none.jsonl: no such file"),
        "label_outside": (config_dict(intent_files[0], bad_label), "bad.jsonl:2: field 'label'"),
        "unreachable_teacher": ({**good, "teacher": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                    "model": "m", "max_retries": 0}}, "teacher.base_url: cannot reach"),
        "seed_too_big": ({**good, "data": {**good["data"], "seed_size": 99}}, "data.seed_size: 99 is more"),
        "missing_student_dir": ({**good, "student": {"model": str(tmp_path / "no-model")}},
                                f"student.model: {tmp_path / 'no-model'}: no such model directory"),
        "missing_student_gguf": ({**good, "student": {"model": "weights/model.gguf"}},
                                 "student.model: weights/model.gguf: no such GGUF file"),
        "student_not_a_name": ({**good, "student": {"model": "my model"}},
                               "student.model 'my model': no such directory or file here, and not a Hugging Face"),
        "missing_teacher_dir": ({**good, "teacher": {"backend": "local", "model": "./no-teacher"}},
                                "teacher.model: ./no-teacher: no such model directory"),
        "llamacpp_teacher_not_gguf": ({**good, "teacher": {"model": "./no-teacher"}},
                                      "teacher.model './no-teacher': the llamacpp teacher needs a named model"),
    }
    for name, (tree, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tree))
        code, out = run_cli("run", str(path), "--out", str(tmp_path / f"run_{name}"))
        assert code == 2, (name, out)
        assert message in out, (name, out)
        assert "Traceback" not in out and len(out.strip().splitlines()) == 1, (name, out)
        assert not (tmp_path / f"run_{name}").exists(), name  # nothing written for bad input
        # and an existing run directory is left exactly as it was
        existing = tmp_path / "existing"
        if not existing.exists():
            existing.mkdir()
            (existing / "config.yaml").write_text(yaml.safe_dump(tree))
            (existing / "metrics.jsonl").write_text('{"iteration": 0}\n')
        code, _ = run_cli("run", str(path), "--out", str(existing))
        assert code == 2, name
        assert sorted(p.name for p in existing.iterdir()) == ["config.yaml", "metrics.jsonl"], name


def test_existing_run_dir_with_other_config_is_untouched(tmp_path, intent_files):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"something": "else"}))
    (run_dir / "metrics.jsonl").write_text('{"iteration": 0}\n')
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files)))
    code, out = run_cli("run", str(path), "--out", str(run_dir))
    assert code == 2 and "holds a run with a different config" in out
    assert (run_dir / "metrics.jsonl").read_text() == '{"iteration": 0}\n'
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_bad_set_override(tmp_path, intent_files):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files)))
    code, out = run_cli("run", str(path), "--set", "loop.iterations")
    assert code == 2 and "expected key=value" in out


def test_resume_needs_a_run_dir(tmp_path):
    code, out = run_cli("resume", str(tmp_path))
    assert code == 2 and "not an llm2llm run dir" in out


def test_unwritable_output_dir(tmp_path, intent_files):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(*intent_files)))
    code, out = run_cli("run", str(path), "--out", str(blocker / "run"))
    assert code == 2 and "cannot write the run dir" in out and "Traceback" not in out
    assert blocker.read_text() == "not a directory"
