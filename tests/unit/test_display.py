"""The quiet console: library noise off around model loading and training only, back with --verbose."""
import subprocess
import sys
import warnings

from llm2llm import display


def test_importing_llm2llm_leaves_warning_filters_alone():
    code = ("import warnings; import llm2llm.student, llm2llm.judge, llm2llm.loop, llm2llm.cli; "
            "ours = [f for f in warnings.filters if f[1] is not None and 'deprecated and will be' in f[1].pattern]; "
            "assert not ours, ours")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_quiet_silences_libraries_inside_and_restores_them_after(monkeypatch):
    import transformers
    from transformers import modeling_gguf_pytorch_utils as gguf

    monkeypatch.setattr(display, "VERBOSE", False)
    transformers.logging.enable_progress_bar()
    level, bar = transformers.logging.get_verbosity(), gguf.tqdm
    seen = {}

    @display.quiet
    def load():
        seen["bars"] = transformers.logging.is_progress_bar_enabled()
        seen["level"] = transformers.logging.get_verbosity()
        seen["gguf_bar_disabled"] = gguf.tqdm([1, 2]).disable
        seen["filtered"] = sorted(f[1].pattern for f in warnings.filters if f[0] == "ignore" and f[1] is not None
                                  and f[1].pattern in display.NOTICES)
        return 7

    assert load() == 7
    assert seen == {"bars": False, "level": transformers.logging.ERROR, "gguf_bar_disabled": True,
                    "filtered": sorted(display.NOTICES)}
    assert transformers.logging.is_progress_bar_enabled() and transformers.logging.get_verbosity() == level
    assert gguf.tqdm is bar


def test_verbose_leaves_libraries_as_they_are(monkeypatch):
    import transformers

    monkeypatch.setattr(display, "VERBOSE", True)
    transformers.logging.enable_progress_bar()
    assert display.quiet(transformers.logging.is_progress_bar_enabled)() is True



def test_a_live_display_leaves_nothing_in_a_log_file(tmp_path):
    """Run into a file (not a terminal), a stage's live display must not leave blank lines between our own."""
    code = ("from llm2llm import display\n"
            "print('before')\n"
            "with display.counting('evaluate', 2) as advance:\n"
            "    advance(2)\n"
            "print('after')\n")
    log = tmp_path / "run.log"
    with log.open("w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, check=True)
    assert log.read_text() == "before\nafter\n"
