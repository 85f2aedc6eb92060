"""The LLM2LLM loop (arXiv 2403.15042, Algorithm 1), and nothing else.

for each iteration t = 0..N:
    fine-tune the student on the training set (from the base model)   # t = 0 is the baseline
    evaluate it on the seed examples and on the test set
    send every seed example it got wrong to the teacher                # not after the last one
    keep the valid, new examples the teacher writes that a judge agrees with; add them to the training set

`build` makes the parts (data, task, judge, student, teacher); `iterate` runs the loop over them; the teacher
stage is augment.py. Each stage writes its output to the run dir before the next starts; a stage whose output is
already there is read back instead of run again, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from rich.console import Console

from . import augment, data, filters, judge as judges, llamacpp_student, student, vllm_student
from .augment import spending, teacher_requests, teacher_stage  # noqa: F401 (benchmarks and tests use them here)
from .config import RunConfig, changed_fields
from .records import MetricsRow, status
from .store import RunStore
from .tasks import Task, make_task
from .teacher import Cache, Teacher, make_backend, price



@dataclass
class Run:
    """The parts of a run, built and checked before the loop starts."""
    cfg: RunConfig
    store: RunStore
    console: Console
    task: Task
    seed: list[dict]
    test: list[dict]
    judge: object  # judge.EmbeddingJudge, judge.TeacherJudge or None
    figures: dict  # judges.json: each judge's agreement with the seed, the probe's spending, the judge chosen
    base: object  # the student's base model and its tokenizer
    tokenizer: object
    teacher: Teacher
    engine: vllm_student.VLLMStudent | llamacpp_student.LlamaCppStudent | None  # evaluation off transformers


def run(cfg: RunConfig, store: RunStore, console: Console | None = None) -> list[dict]:
    """Build the run's parts and run the loop: metrics.jsonl's rows."""
    return iterate(build(cfg, store, console))


def build(cfg: RunConfig, store: RunStore, console: Console | None = None, baseline=None) -> Run:
    """Data, task, judge, student and teacher. Everything that can be checked is checked before the run dir is
    touched or a model loaded; then the run dir is opened and the models are loaded. `baseline` (compare's random
    arm): the LLM2LLM run of the same seed sample, or its record, which iteration 0 and the judge are taken from."""
    console = console or Console()
    task, seed, test = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    student.check_model(cfg.student.model, cfg.student.gguf_file, "student.model")
    if cfg.teacher.backend == "local":
        student.check_model(cfg.teacher.model, cfg.teacher.gguf_file, "teacher.model")
    if cfg.student.engine == "llamacpp":
        llamacpp_student.check(cfg.student, task)
    remote = make_backend(cfg.teacher) if cfg.teacher.backend != "local" else None
    judge = judges.make_judge(cfg.filters.judge, cfg.filters.judge_model, task, seed)
    store.open(cfg.model_dump(mode="json"), changed_fields)
    if baseline is not None:
        from .compare import take_iteration_zero

        take_iteration_zero(store, baseline, seed, cfg.teacher.show_student_answer)
    base, tok = student.load(cfg.student.model, cfg.student.gguf_file)
    backend = remote or make_backend(cfg.teacher, {(cfg.student.model, cfg.student.gguf_file): (base, tok)})
    teacher = Teacher(cfg.teacher, Cache(store.cache_path), backend)
    judge, figures = choose_judge(cfg, store, task, seed, judge, teacher, console)
    engine = (llamacpp_student.LlamaCppStudent(cfg.student, task, base, tok) if cfg.student.engine == "llamacpp"
              else vllm_student.VLLMStudent(cfg.student) if vllm_student.wanted(cfg.student) else None)
    console.print(f"task: {cfg.task.type}, seed: {len(seed)}, test: {len(test)}, iterations: 0..{cfg.loop.iterations}")
    return Run(cfg, store, console, task, seed, test, judge, figures, base, tok, teacher, engine)


def iterate(r: Run) -> list[dict]:
    """Algorithm 1 over the built parts; stops early when the teacher budget allows not a single call."""
    cfg, store = r.cfg, r.store
    train_set, model, last = r.seed, r.base, cfg.loop.iterations
    with contextlib.closing(r.teacher.cache):
        for it in range(cfg.loop.iterations + 1):
            clock = Clock(store, it)
            train_set = store.stage(it, "train.jsonl", lambda: train_set)
            with clock.timed("train_s"):
                model, train_stats = fine_tune(r, it, train_set, model)
            with clock.timed("eval_s"):
                parents, pred_seed, pred_test = evaluate(r, it, model, train_set)
            wrong = store.stage(it, "wrong.jsonl", lambda: [{**ex, "student_prediction": p["prediction"]}
                                                            for ex, p in zip(parents, pred_seed) if not p["correct"]])
            new = augment.nothing(store, it)
            if it < last:
                with clock.timed("teacher_s"):
                    new = augment.augment(r, it, wrong, parents, pred_seed, train_set)
            record(r, metrics_row(r, it, train_set, pred_seed, pred_test, wrong, new, train_stats, clock.seconds))
            if cfg.loop.from_scratch and cfg.output.keep_models != "all" and it > 0:  # only the last is kept
                store.drop_model(it - 1)
            train_set = train_set + new.accepted
            if new.stopped:
                last = it
                break
    if cfg.output.keep_models == "none":
        store.drop_model(last)
    return store.metrics()


class Clock:
    """An iteration's seconds per stage (train_s, eval_s, teacher_s), kept in iter_NNN/clock.json as each stage
    ends, so that an iteration stopped and resumed still counts the stages it finished before the stop. An iteration
    whose metrics row is written is not timed again (a resumed run reads it back)."""

    def __init__(self, store: RunStore, iteration: int):
        self.store, self.iteration = store, iteration
        self.finished = any(m["iteration"] == iteration and not m.get("stopped") for m in store.metrics())
        self.seconds = store.read_json(iteration, "clock.json") if store.has(iteration, "clock.json") else {}

    @contextlib.contextmanager
    def timed(self, name: str):
        t0 = time.time()
        yield
        if not self.finished:
            self.seconds[name] = round(self.seconds.get(name, 0) + time.time() - t0, 1)
            self.store.write_json(self.iteration, "clock.json", self.seconds)


def choose_judge(cfg: RunConfig, store: RunStore, task: Task, seed: list[dict], judge, teacher: Teacher,
                 console: Console) -> tuple[object, dict]:
    """The judge of this run and its figures on the seed: measured once (the teacher judge's probe counts against
    the budget) and kept in iter_000/judges.json, read back on resume."""
    if store.has(0, "judges.json"):
        figures = store.read_json(0, "judges.json")
        return (judges.TeacherJudge(task) if figures.get("chosen") == "teacher" else judge), figures
    teacher.budget = spending(cfg, [], 0)  # the probe's calls count against the budget too
    judge, figures = judges.pick(cfg.filters.judge, judge, task, seed, teacher, cfg.filters.judge_probe,
                                 console.print)
    store.write_json(0, "judges.json", figures)
    return judge, figures


def fine_tune(r: Run, it: int, train_set: list[dict], model) -> tuple[object, dict]:
    """This iteration's student (trained from the base model, or from the last one when the config says to
    continue; read back when on disk) and its training figures. Not loaded at all when its predictions are on disk
    and no later iteration trains from it."""
    cfg, store = r.cfg, r.store
    evaluated = store.has(it, "pred_seed.jsonl") and store.has(it, "pred_test.jsonl")
    if evaluated and cfg.loop.from_scratch:
        return model, store.train_stats(it) if store.model_done(it) else {}
    start = r.base if cfg.loop.from_scratch else model
    if store.model_done(it):
        return student.load_trained(start, store.model_dir(it), cfg.student), store.train_stats(it)
    r.console.print(f"[bold]iteration {it}[/]: training on {len(train_set)} examples")
    store.mark_stage(it, "train")
    rows = student.training_rows(r.task, train_set)
    if cfg.student.accelerate_args:  # DDP / FSDP / DeepSpeed processes; the model comes back on disk
        stats = student.train_launched(rows, cfg.student, store.model_dir(it))
        model = student.load_trained(start, store.model_dir(it), cfg.student)
    else:
        model, stats = student.train(start, r.tokenizer, rows, cfg.student, store.model_dir(it))
    store.mark_model_done(it, stats)
    if stats.get("cut_rows") or stats.get("dropped_rows"):
        r.console.print(f"[yellow]warning: {stats['dropped_rows']} training examples left out and "
                        f"{stats['cut_rows']} cut: longer than student.max_length {cfg.student.max_length} "
                        "tokens (see train_stats.json); raise it to train on them whole[/]")
    return model, store.train_stats(it)


def evaluate(r: Run, it: int, model, train_set: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(parents, predictions on them, predictions on the test set): the parents pool is the seed data unless the
    config says the whole training set."""
    cfg, store, task = r.cfg, r.store, r.task
    parents = r.seed if cfg.loop.parents == "seed" else train_set

    def predict(examples, label, name):
        store.mark_stage(it, "evaluate")
        if r.engine:  # vLLM (GPU) or llama.cpp (CPU): the base model plus this iteration's adapter
            texts = r.engine.predict(task, examples, store.model_dir(it), it, label)
        else:  # what a stopped evaluation had answered is not asked again
            texts = student.predict(model, r.tokenizer, task, examples, cfg.student.eval_batch_size, label,
                                    cfg.student.max_length, store.partial(it, name),
                                    lambda answers: store.keep_partial(it, name, answers))
        return [{"id": ex["id"], "prediction": text, "answer": (answer := task.extract(text)),
                 "correct": task.score(answer, ex)} for ex, text in zip(examples, texts)]

    pred_seed = store.stage(it, "pred_seed.jsonl", lambda: predict(parents, "seed", "pred_seed.jsonl"))
    pred_test = store.stage(it, "pred_test.jsonl", lambda: predict(r.test, "test", "pred_test.jsonl"))
    return parents, pred_seed, pred_test


def accuracy(preds: list[dict]) -> float:
    return sum(p["correct"] for p in preds) / len(preds) if preds else 0.0


def metrics_row(r: Run, it: int, train_set, pred_seed, pred_test, wrong, new: augment.Augmented, train_stats: dict,
                clock: dict) -> MetricsRow:
    """The iteration's row of metrics.jsonl."""
    seed_ids = {ex["id"] for ex in r.seed}
    made = [status(c["reply"]) for c in new.calls]
    row = {"iteration": it, "train_size": len(train_set),
           "seed_accuracy": accuracy([p for p in pred_seed if p["id"] in seed_ids]),
           "test_accuracy": accuracy(pred_test), "wrong": len(wrong),
           "calls": sum(1 for s in made if s != "skipped"),
           "accepted": len(new.accepted), "rejected": len(new.rejected), **filters.counts(new.accepted, new.rejected),
           **new.spent, "teacher_failed": made.count("failed"),
           **({"budget_skipped": n} if (n := made.count("skipped")) else {}),
           **{k: v for k, v in train_stats.items() if k in ("train_loss", "steps", "padding_waste")}, **clock}
    if "embedding" in r.figures:
        row["judge_seed_agreement"] = r.figures["embedding"]
    if "teacher" in r.figures:
        row["teacher_judge_seed_agreement"] = r.figures["teacher"]
    if r.cfg.teacher.price_per_million:
        row["cost"] = round(price(r.cfg.teacher.price_per_million, row["prompt_tokens"], row["completion_tokens"]), 6)
    if new.stopped:
        row["stopped"] = "budget"
    return row


def record(r: Run, row: dict) -> None:
    """Write the iteration's metrics row (once; a stopped run that went on writes it anew) and say it in a line."""
    written = [m for m in r.store.metrics() if m["iteration"] == row["iteration"]]
    if not written or (written[0].get("stopped") and not row.get("stopped")):
        r.store.write_metrics(row)
    r.console.print(f"iteration {row['iteration']}: test acc {row['test_accuracy']:.3f}, seed {row['seed_accuracy']:.3f}, "
                    f"{row['wrong']} wrong, {row['calls']} calls, {row['accepted']} kept, "
                    f"{sum(row.get(k, 0) for k in ('train_s', 'eval_s', 'teacher_s')) / 60:.1f} min")
