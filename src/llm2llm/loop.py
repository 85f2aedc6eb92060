"""The LLM2LLM loop (arXiv 2403.15042), and nothing else.

for each iteration t = 0..N:
    fine-tune the student on the training set (from the base model)   # t = 0 is the baseline
    evaluate it on the seed examples and on the test set
    send every seed example it got wrong to the teacher                # not after the last one
    keep the valid, new examples the teacher writes that a judge agrees with; add them to the training set

Each stage writes its output to the run dir before the next starts; a stage whose output is
already there is read back instead of run again, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import functools
import random
import time

from rich.console import Console

from . import data, filters, judge as judges, student, vllm_student
from .config import RunConfig
from .store import RunStore
from .tasks import make_task
from .teacher import Budget, Cache, Teacher, make_backend


# config fields that change how a run goes, not what it produces: they may differ on resume
# (a budget may be raised to let a run that stopped at it go on)
FREE_FIELDS = ("teacher.concurrency", "teacher.timeout_s", "teacher.max_retries", "teacher.api_key_env",
               "teacher.requests_per_minute", "teacher.tokens_per_minute", "teacher.budget_tokens",
               "teacher.budget_cost", "output")


def stage(store: RunStore, iteration: int, name: str, compute) -> list[dict]:
    """The stage's records: read back when already on disk, else computed and written atomically."""
    if store.has(iteration, name):
        return store.read_jsonl(iteration, name)
    rows = compute()
    store.write_jsonl(iteration, name, rows)
    return rows


def evaluate(task, examples, predict, label) -> list[dict]:
    texts = predict(examples, label)
    rows = []
    for ex, text in zip(examples, texts):
        answer = task.extract(text)
        rows.append({"id": ex["id"], "prediction": text, "answer": answer, "correct": task.score(answer, ex)})
    return rows


def accuracy(preds: list[dict]) -> float:
    return sum(p["correct"] for p in preds) / len(preds) if preds else 0.0


def run(cfg: RunConfig, store: RunStore, console: Console | None = None,
        baseline: RunStore | None = None) -> list[dict]:
    """`baseline`: a run of the same seed sample and student whose iteration 0 (training set and predictions)
    this run takes instead of training and evaluating the same model again (compare's second arm)."""
    console = console or Console()
    # everything that can be checked is checked before the run dir is touched or a model loaded
    task, seed, test = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    student.check_model(cfg.student.model, cfg.student.gguf_file, "student.model")
    if cfg.teacher.backend == "local":
        student.check_model(cfg.teacher.model, cfg.teacher.gguf_file, "teacher.model")
    remote = make_backend(cfg.teacher) if cfg.teacher.backend != "local" else None
    judge = judges.make_judge(cfg.filters.judge, cfg.filters.judge_model, task, seed)
    store.open(cfg.model_dump(mode="json"), free_fields=FREE_FIELDS)
    base, tok = student.load(cfg.student.model, cfg.student.gguf_file)
    backend = remote or make_backend(cfg.teacher, {(cfg.student.model, cfg.student.gguf_file): (base, tok)})
    teacher = Teacher(cfg.teacher, Cache(store.cache_path), backend)
    if store.has(0, "judges.json"):
        figures = store.read_json(0, "judges.json")
        judge = judges.TeacherJudge(task) if figures.get("chosen") == "teacher" else judge
    else:
        teacher.budget = spending(cfg, [], 0)  # the probe's calls count against the budget too
        judge, figures = judges.pick(cfg.filters.judge, judge, task, seed, teacher, cfg.filters.judge_probe,
                                     console.print)
        store.write_json(0, "judges.json", figures)
    engine = vllm_student.VLLMStudent(cfg.student) if vllm_student.wanted(cfg.student) else None
    console.print(f"task: {cfg.task.type}, seed: {len(seed)}, test: {len(test)}, iterations: 0..{cfg.loop.iterations}")

    train_set, model, last = seed, base, cfg.loop.iterations
    for it in range(cfg.loop.iterations + 1):
        clock = {}
        if it == 0 and baseline is not None and baseline.has(0, "pred_test.jsonl") and \
                [r["id"] for r in baseline.read_jsonl(0, "train.jsonl")] == [r["id"] for r in seed]:
            for name in ("train.jsonl", "pred_seed.jsonl", "pred_test.jsonl"):
                if not store.has(0, name):
                    store.write_jsonl(0, name, baseline.read_jsonl(0, name))
        train_set = stage(store, it, "train.jsonl", lambda: train_set)

        # 1. fine-tune the student (from the base model unless the config says to continue)
        t0, train_stats = time.time(), {}  # read back from the model dir while it is kept
        evaluated = store.has(it, "pred_seed.jsonl") and store.has(it, "pred_test.jsonl")
        if not evaluated or not cfg.loop.from_scratch:  # continued training needs every model
            start = base if cfg.loop.from_scratch else model
            if store.model_done(it):
                model = student.load_trained(start, store.model_dir(it), cfg.student)
            else:
                console.print(f"[bold]iteration {it}[/]: training on {len(train_set)} examples")
                store.mark_stage(it, "train")
                rows = student.training_rows(task, train_set)
                if cfg.student.accelerate_args:  # DDP / FSDP / DeepSpeed processes; the model comes back on disk
                    stats = student.train_launched(rows, cfg.student, store.model_dir(it))
                    model = student.load_trained(start, store.model_dir(it), cfg.student)
                else:
                    model, stats = student.train(start, tok, rows, cfg.student, store.model_dir(it))
                store.mark_model_done(it, stats)
                if stats.get("cut_rows") or stats.get("dropped_rows"):
                    console.print(f"[yellow]warning: {stats['dropped_rows']} training examples left out and "
                                  f"{stats['cut_rows']} cut: longer than student.max_length {cfg.student.max_length} "
                                  "tokens (see train_stats.json); raise it to train on them whole[/]")
        if store.model_done(it):
            train_stats = store.train_stats(it)
        clock["train_s"] = round(time.time() - t0, 1)

        # 2. evaluate on the parents pool (the seed data, by default) and on the test set
        t0 = time.time()
        parents = seed if cfg.loop.parents == "seed" else train_set

        def predict(examples, label):
            store.mark_stage(it, "evaluate")
            if engine:  # vLLM: the base model plus this iteration's adapter (or its weights), on the GPU
                return engine.predict(task, examples, store.model_dir(it), it)
            return student.predict(model, tok, task, examples, cfg.student.eval_batch_size, label, cfg.student.max_length)

        pred_seed = stage(store, it, "pred_seed.jsonl", lambda: evaluate(task, parents, predict, "seed"))
        pred_test = stage(store, it, "pred_test.jsonl", lambda: evaluate(task, test, predict, "test"))
        clock["eval_s"] = round(time.time() - t0, 1)
        wrong = [{**ex, "student_prediction": p["prediction"]}
                 for ex, p in zip(parents, pred_seed) if not p["correct"]]
        stage(store, it, "wrong.jsonl", lambda: wrong)

        # 3. the teacher writes new examples from each wrong one; 4. keep the good ones
        calls, accepted, rejected, stop = [], [], [], None
        if it < cfg.loop.iterations:
            t0 = time.time()
            chosen = wrong if cfg.loop.augment == "wrong" else stage(
                store, it, "chosen.jsonl", lambda: choose_randomly(parents, pred_seed, len(wrong), it, cfg))
            requests = teacher_requests(task, chosen, seed, it, cfg)
            teacher.budget = spending(cfg, store.metrics(), it, figures.get("probe") if it == 0 else None)
            if not store.has(it, "teacher_calls.jsonl") and out_of_budget(teacher, requests):
                stop = "budget"
            else:
                calls = teacher_stage(store, it, teacher, requests, console)

                def sift():
                    store.mark_stage(it, "filter")
                    return sifted(store, it, judge, filters.keep(
                        task, calls, train_set, test, it + 1, teacher.model_name, cfg.filters), teacher)
                kept = functools.cache(sift)
                accepted = stage(store, it, "accepted.jsonl", lambda: kept()[0])
                rejected = stage(store, it, "rejected.jsonl", lambda: kept()[1])
            clock["teacher_s"] = round(time.time() - t0, 1)

        seed_ids = {ex["id"] for ex in seed}
        row = {"iteration": it, "train_size": len(train_set),
               "seed_accuracy": accuracy([p for p in pred_seed if p["id"] in seed_ids]),
               "test_accuracy": accuracy(pred_test), "wrong": len(wrong),
               "generated": sum(1 for c in calls if "skipped" not in c["reply"]),
               "accepted": len(accepted), "rejected": len(rejected), **filters.counts(accepted, rejected),
               **teacher_spending(store, it, calls),
               "teacher_failed": sum(1 for c in calls if "error" in c["reply"]),
               **({"budget_skipped": n} if (n := sum(1 for c in calls if "skipped" in c["reply"])) else {}),
               **{k: v for k, v in train_stats.items() if k in ("train_loss", "steps", "padding_waste")}, **clock}
        if "embedding" in figures:
            row["judge_seed_agreement"] = figures["embedding"]
        if "teacher" in figures:
            row["teacher_judge_seed_agreement"] = figures["teacher"]
        if cfg.teacher.price_per_million:
            row["cost"] = round(Budget(cfg.teacher).price(row["prompt_tokens"], row["completion_tokens"]), 6)
        if stop:
            row["stopped"] = stop
        written = [r for r in store.metrics() if r["iteration"] == it]
        if not written or (written[0].get("stopped") and not stop):  # a stopped run that went on: anew
            store.write_metrics(row)
        console.print(f"iteration {it}: test accuracy {row['test_accuracy']:.3f}, seed {row['seed_accuracy']:.3f}, "
                      f"{len(wrong)} wrong, {row['generated']} calls, {len(accepted)} kept "
                      f"({sum(clock.values()) / 60:.1f} min)")
        if cfg.loop.from_scratch and cfg.output.keep_models != "all" and it > 0:  # only the last is kept
            store.drop_model(it - 1)
        train_set = train_set + accepted
        if stop:
            console.print(f"[yellow]teacher budget reached ({teacher.budget.describe()}): the run stops after "
                          f"iteration {it} and keeps everything made so far. To go on: llm2llm resume {store.root} "
                          f"--set teacher.budget_tokens=N (or teacher.budget_cost=X)[/]")
            last = it
            break
    if cfg.output.keep_models == "none":
        store.drop_model(last)
    return store.metrics()


def sifted(store: RunStore, iteration: int, judge, found: tuple[list[dict], list[dict]], teacher: Teacher):
    """The judge's verdicts on what the filters kept; the teacher calls a teacher judge made are recorded in
    judge_stats.json (before the stage's output), so that metrics.jsonl and the budget count them."""
    out = judges.sift(judge, *found, iteration, teacher)
    if getattr(judge, "spent", None) is not None:
        store.write_json(iteration, "judge_stats.json", judge.spent)
    return out


def teacher_spending(store: RunStore, iteration: int, calls: list[dict]) -> dict:
    """This iteration's teacher tokens for metrics.jsonl: the teacher stage's calls plus the judge's (and, in
    iteration 0, the judge's measurement on the seed at the start of the run)."""
    judged = store.read_json(iteration, "judge_stats.json") if store.has(iteration, "judge_stats.json") else {}
    probe = store.read_json(0, "judges.json").get("probe", {}) if iteration == 0 and store.has(0, "judges.json") else {}
    extra = {k: judged.get(k, 0) + probe.get(k, 0) for k in ("judge_prompt_tokens", "judge_completion_tokens")}
    return {"prompt_tokens": sum(c["reply"]["prompt_tokens"] for c in calls) + extra["judge_prompt_tokens"],
            "completion_tokens": sum(c["reply"]["completion_tokens"] for c in calls)
            + extra["judge_completion_tokens"], **judged, **({"probe_calls": probe["judge_calls"]} if probe else {})}


def spending(cfg: RunConfig, rows: list[dict], iteration: int, probe: dict | None = None) -> Budget | None:
    """The budget for this iteration's teacher stage: the cap, less what earlier iterations spent (and, in
    iteration 0, what the judge's probe of the seed spent at the start)."""
    if cfg.teacher.budget_tokens is None and cfg.teacher.budget_cost is None:
        return None
    budget = Budget(cfg.teacher)
    if probe:
        budget.settle(None, {"prompt_tokens": probe["judge_prompt_tokens"],
                             "completion_tokens": probe["judge_completion_tokens"]})
    for row in rows:
        if row["iteration"] < iteration:
            budget.settle(None, row)
    return budget


def out_of_budget(teacher: Teacher, requests: list[dict]) -> bool:
    """True when not even the smallest of this stage's calls fits in what is left of the budget."""
    if teacher.budget is None or not requests:
        return False
    return not teacher.budget.affords(min(teacher.most_tokens(r, teacher.cfg.max_tokens) for r in requests))


def choose_randomly(parents: list[dict], preds: list[dict], n_wrong: int, iteration: int,
                    cfg: RunConfig) -> list[dict]:
    """The random-augmentation baseline: random parents instead of the wrong ones, same number."""
    counts = cfg.loop.random_counts
    n = counts[iteration] if counts and iteration < len(counts) else n_wrong
    rng = random.Random(f"{cfg.data.sampling_seed}-{iteration}")
    picked = sorted(rng.sample(range(len(parents)), min(n, len(parents))))
    return [{**parents[i], "student_prediction": preds[i]["prediction"]} for i in picked]


def teacher_requests(task, chosen: list[dict], seed: list[dict], iteration: int, cfg: RunConfig) -> list[dict]:
    """One teacher call per chosen (wrong) example and sample index, showing a few other seed examples
    of the same label or kind and asking for several new examples in the task's JSON schema."""
    requests, n = [], cfg.teacher.examples_per_call
    for ex in chosen:
        shown = ex["student_prediction"] if cfg.teacher.show_student_answer else None
        for sample in range(cfg.teacher.samples_per_example):
            shots = pick_shots(task, ex, seed, cfg.teacher.shots, f"{iteration}-{sample}")
            requests.append({"parent": ex, "iteration": iteration, "sample": sample,
                             "messages": task.teacher_messages(ex, shown, shots, n),
                             "schema": task.reply_schema(ex, n)})
    return requests


def pick_shots(task, parent: dict, seed: list[dict], k: int, salt: str) -> list[dict]:
    """k other seed examples of the parent's kind (its label, for classification), the same on every rerun."""
    same = [ex for ex in seed if ex["id"] != parent["id"] and task.kind(ex) == task.kind(parent)]
    return random.Random(f"{parent['id']}-{salt}").sample(same, min(k, len(same)))


def teacher_stage(store: RunStore, iteration: int, teacher: Teacher, requests: list[dict], console: Console):
    """The teacher stage's calls, read back when on disk; but while the stage is unfinished (its replies not yet
    filtered: no accepted.jsonl), the calls that failed are asked again (the rest come from the cache, unpaid)."""
    resumed = store.has(iteration, "teacher_calls.jsonl")
    calls = stage(store, iteration, "teacher_calls.jsonl", lambda: ask_teacher(teacher, requests, store, console))
    if resumed and not store.has(iteration, "accepted.jsonl") and any("error" in c["reply"] for c in calls):
        calls = ask_teacher(teacher, requests, store, console)
        store.write_jsonl(iteration, "teacher_calls.jsonl", calls)
    return calls


def ask_teacher(teacher: Teacher, requests: list[dict], store: RunStore, console: Console) -> list[dict]:
    """The replies with what produced them. A call the budget did not allow is kept as
    {"skipped": "budget"}, so the record also says what was not asked."""
    iteration = requests[0]["iteration"] if requests else 0
    if requests:
        store.mark_stage(iteration, "teacher")
    replies = teacher.complete(requests)
    if requests:
        store.write_json(iteration, "teacher_stats.json", teacher.tally.as_dict())
    if teacher.tally.made or teacher.tally.skipped:
        console.print(f"teacher: {teacher.tally.line()}")
    skipped = {"skipped": "budget", "text": "", "prompt_tokens": 0, "completion_tokens": 0}
    return [{"parent_id": r["parent"]["id"], **r, "reply": reply or skipped} for r, reply in zip(requests, replies)]
