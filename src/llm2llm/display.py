"""What a run shows on the console: one live display per stage and one line per iteration, without library noise.

The libraries' own progress bars (weight loading, GGUF de-quantizing, the Trainer's tqdm), the Trainer's log dicts
and their notices are off unless `--verbose` (`set_verbose`). They are turned off around the calls that load or
train a model (`quiet`), not when llm2llm is imported.
"""
from __future__ import annotations

import contextlib
import functools
import time
import warnings

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

VERBOSE = False
# notices that say nothing to a user of this tool: deprecations inside transformers and TRL, peft looking for a
# config.json next to a GGUF file
NOTICES = (r".*is deprecated and will be removed", r"Could not find a config file")


def set_verbose(on: bool) -> None:
    global VERBOSE
    VERBOSE = on


@contextlib.contextmanager
def _silenced():
    import datasets
    import transformers
    from transformers import modeling_gguf_pytorch_utils as gguf

    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    dataset_bars = datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # weight loading, and huggingface_hub's downloads
    datasets.disable_progress_bars()
    bar = getattr(gguf, "tqdm", None)  # GGUF de-quantizing uses tqdm directly
    try:
        with warnings.catch_warnings():
            for pattern in NOTICES:
                warnings.filterwarnings("ignore", message=pattern)
            if bar is not None:
                gguf.tqdm = functools.partial(bar, disable=True)
            yield
    finally:
        if bar is not None:
            gguf.tqdm = bar
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
        if dataset_bars:
            datasets.enable_progress_bars()


def quiet(fn):
    """`fn` with the libraries' progress bars, log output and notices off, unless --verbose."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if VERBOSE:
            return fn(*args, **kwargs)
        with _silenced():
            return fn(*args, **kwargs)
    return wrapper


def stage_progress(label: str) -> Progress:
    """A stage's live display: label, bar, done/total, the stage's own figures (the `stats` field), time. Shown on
    a terminal only: in a log file it would leave a blank line behind."""
    return Progress(TextColumn(label), BarColumn(bar_width=16), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), transient=True,
                    disable=not get_console().is_interactive)


@contextlib.contextmanager
def counting(label: str, total: int, unit: str = "examples"):
    """A live display of `total` items and their rate; yields advance(n)."""
    with stage_progress(label) as progress:
        bar, t0, done = progress.add_task(label, total=total, stats=""), time.time(), [0]

        def advance(n: int) -> None:
            done[0] += n
            rate = done[0] / max(time.time() - t0, 1e-9)
            progress.update(bar, advance=n, stats=f"{rate:.1f} {unit}/s")
        yield advance


def training_display(label: str, tokens: dict):
    """A Trainer callback in place of its tqdm bar and log dicts: step, loss and tokens/s live (`tokens`: the
    counts student.count_tokens keeps)."""
    from transformers import TrainerCallback

    class Display(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.progress, self.t0, self.loss = stage_progress(label), time.time(), None
            self.progress.start()
            self.bar = self.progress.add_task(label, total=state.max_steps, stats="")

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.loss = (logs or {}).get("loss", self.loss)

        def on_step_end(self, args, state, control, **kwargs):
            rate = tokens["real"] / max(time.time() - self.t0, 1e-9)
            try:
                loss = f"loss {float(self.loss):.3f}  "
            except (TypeError, ValueError):  # no loss logged yet
                loss = ""
            self.progress.update(self.bar, completed=state.global_step, stats=f"{loss}{rate:,.0f} tok/s")

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.stop()

    return Display()
