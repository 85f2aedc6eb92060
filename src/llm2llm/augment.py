"""The teacher stage of one iteration: the parents shown to the teacher (the wrong ones, or random ones for the
baseline), its requests (a few shots each), the budget, the calls, and what is kept (the filters, then the judge).

One entry point, `augment`: the stage's calls, accepted and rejected examples and every teacher token it spent,
the judge's included. Each part is written to the run dir before the next starts (see loop.py).
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from rich.console import Console

from . import filters, judge as judges
from .config import RunConfig
from .records import Request, TeacherCall, status
from .store import RunStore
from .teacher import Budget, Teacher


@dataclass
class Augmented:
    """What one teacher stage made and spent."""
    calls: list[TeacherCall] = field(default_factory=list)
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    spent: dict = field(default_factory=dict)  # teacher and judge tokens and calls, for metrics.jsonl
    stopped: bool = False  # the budget did not allow a single call: the run stops here


def augment(run, iteration: int, wrong: list[dict], parents: list[dict], pred_seed: list[dict],
            train_set: list[dict]) -> Augmented:
    """Ask the teacher for new examples from this iteration's wrong (or randomly chosen) parents, and keep the
    valid, new ones the judge agrees with. `run`: loop.Run."""
    cfg, store, teacher = run.cfg, run.store, run.teacher
    chosen = wrong if cfg.loop.augment == "wrong" else store.stage(
        iteration, "chosen.jsonl", lambda: choose_randomly(parents, pred_seed, len(wrong), iteration, cfg))
    requests = teacher_requests(run.task, chosen, run.seed, iteration, cfg)
    teacher.budget = spending(cfg, store.metrics(), iteration, run.figures.get("probe") if iteration == 0 else None)
    if not store.has(iteration, "teacher_calls.jsonl") and out_of_budget(teacher, requests):
        return Augmented(spent=teacher_spending(store, iteration, []), stopped=True)
    calls = teacher_stage(store, iteration, teacher, requests, run.console)

    @functools.cache
    def kept():
        store.mark_stage(iteration, "filter")
        return sifted(store, iteration, run.judge, filters.keep(
            run.task, calls, train_set, run.test, iteration + 1, teacher.model_name, cfg.filters), teacher)
    accepted = store.stage(iteration, "accepted.jsonl", lambda: kept()[0])
    rejected = store.stage(iteration, "rejected.jsonl", lambda: kept()[1])
    return Augmented(calls, accepted, rejected, teacher_spending(store, iteration, calls))


def nothing(store: RunStore, iteration: int) -> Augmented:
    """The last iteration asks the teacher nothing; the judge's probe of the seed may still count in it."""
    return Augmented(spent=teacher_spending(store, iteration, []))


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
    return [{**parents[i], "student_prediction": preds[i]["prediction"], "student_correct": preds[i]["correct"]}
            for i in picked]


def teacher_requests(task, chosen: list[dict], seed: list[dict], iteration: int, cfg: RunConfig) -> list[Request]:
    """One teacher call per chosen (wrong) example and sample index, showing a few other seed examples
    of the same label or kind and asking for several new examples in the task's JSON schema."""
    requests, n = [], cfg.teacher.examples_per_call
    for ex in chosen:
        # the student's answer is shown only where it is wrong (a random parent may have been answered right)
        wrong = not ex.get("student_correct", False)
        shown = ex["student_prediction"] if cfg.teacher.show_student_answer and wrong else None
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


def teacher_stage(store: RunStore, iteration: int, teacher: Teacher, requests: list[Request],
                  console: Console) -> list[TeacherCall]:
    """The teacher stage's calls, read back when on disk; but while the stage is unfinished (its replies not yet
    filtered: no accepted.jsonl), the calls that failed are asked again (the rest come from the cache, unpaid)."""
    resumed = store.has(iteration, "teacher_calls.jsonl")
    calls = store.stage(iteration, "teacher_calls.jsonl", lambda: ask_teacher(teacher, requests, store, console))
    if resumed and not store.has(iteration, "accepted.jsonl") and any(status(c["reply"]) == "failed" for c in calls):
        calls = ask_teacher(teacher, requests, store, console)
        store.write_jsonl(iteration, "teacher_calls.jsonl", calls)
    return calls


def ask_teacher(teacher: Teacher, requests: list[Request], store: RunStore, console: Console) -> list[TeacherCall]:
    """The replies with what produced them. A call the budget did not allow is kept with the status "skipped",
    so the record also says what was not asked."""
    iteration = requests[0]["iteration"] if requests else 0
    if requests:
        store.mark_stage(iteration, "teacher")
    replies = teacher.complete(requests)
    if requests:
        store.write_json(iteration, "teacher_stats.json", teacher.tally.as_dict())
    if teacher.tally.made or teacher.tally.skipped:
        console.print(f"teacher: {teacher.tally.line()}")
    skipped = {"status": "skipped", "text": "", "prompt_tokens": 0, "completion_tokens": 0}
    return [{"parent_id": r["parent"]["id"], **r, "reply": reply or skipped} for r, reply in zip(requests, replies)]
