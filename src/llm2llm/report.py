"""The run report: report.md and a self-contained report.html (PNG plots inline), from the run dir alone."""
from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

import yaml

from . import UserError
from .filters import CATEGORIES, category
from .store import RunStore
from .teacher import price

EXAMPLES_PER_ITERATION = 3


def _plots(metrics: list[dict], reject_reasons: dict[int, Counter]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [m["iteration"] for m in metrics]
    figures = {}

    def save(name, fig):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        figures[name] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(its, [m["test_accuracy"] for m in metrics], "o-", label="test")
    ax.plot(its, [m["seed_accuracy"] for m in metrics], "s--", label="seed")
    ax.set(xlabel="iteration", ylabel="accuracy", title="Accuracy per iteration", xticks=its)
    ax.legend()
    save("accuracy", fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(its, [m["train_size"] for m in metrics], color="tab:green")
    ax.set(xlabel="iteration", ylabel="examples", title="Training-set size", xticks=its)
    save("train_size", fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(its, [m["wrong"] for m in metrics], color="tab:red")
    ax.set(xlabel="iteration", ylabel="seed examples", title="Wrong seed examples", xticks=its)
    save("wrong", fig)

    fig, ax = plt.subplots(figsize=(6.5, 3.2))  # room for the legend beside the bars
    reasons = [c for c in CATEGORIES if any(c in counts for counts in reject_reasons.values())]
    bottom = [0] * len(its)
    for reason in reasons:
        values = [reject_reasons.get(i, Counter())[reason] for i in its]
        ax.bar(its, values, bottom=bottom, label=reason)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(xlabel="iteration", ylabel="replies", title="Rejected teacher replies by reason", xticks=its)
    if reasons:  # beside the bars, not over them
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    save("rejects", fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([i - 0.2 for i in its], [m.get("prompt_tokens", 0) for m in metrics], width=0.4, label="prompt")
    ax.bar([i + 0.2 for i in its], [m.get("completion_tokens", 0) for m in metrics], width=0.4, label="completion")
    costs = [m.get("cost") for m in metrics]
    title = "Teacher tokens"
    if any(c is not None for c in costs):
        title += f" (cost: {sum(c or 0 for c in costs):.4g} in all)"
        for i, c in zip(its, costs):
            if c:
                ax.annotate(f"{c:.3g}", (i, 0), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set(xlabel="iteration", ylabel="tokens", title=title, xticks=its)
    ax.legend()
    save("tokens", fig)
    return figures


# the per-iteration table: (name on the console, name in the report, cell); the console shows the first nine
COLUMNS = (
    ("iter", "iteration", lambda m, base: str(m["iteration"])),
    ("train", "train size", lambda m, base: str(m["train_size"])),
    ("seed acc", "seed acc", lambda m, base: f"{m['seed_accuracy']:.3f}"),
    ("test acc", "test acc", lambda m, base: f"{m['test_accuracy']:.3f}"),
    ("Δ test", "Δ test vs it. 0", lambda m, base: f"{m['test_accuracy'] - base:+.3f}"),
    ("wrong", "wrong", lambda m, base: str(m["wrong"])),
    ("calls", "teacher calls", lambda m, base: str(m["calls"])),
    ("kept", "accepted", lambda m, base: str(m["accepted"])),
    ("dropped", "rejected", lambda m, base: str(m["rejected"])),
    (None, "prompt tokens", lambda m, base: str(m.get("prompt_tokens", 0))),
    (None, "completion tokens", lambda m, base: str(m.get("completion_tokens", 0))),
    (None, "cost", lambda m, base: f"{m['cost']:.4g}" if "cost" in m else "-"),
)


def metrics_table(metrics: list[dict], console: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells) of metrics rows: the console's short table, or the report's whole one."""
    columns = [(short, name, cell) for short, name, cell in COLUMNS if short or not console]
    base = metrics[0]["test_accuracy"] if metrics else 0.0
    return ([short if console else name for short, name, _ in columns],
            [[cell(m, base) for _, _, cell in columns] for m in metrics])


def projection(metrics: list[dict], config: dict) -> str:
    """What one more iteration would cost: a call per seed example still wrong (and sample), at the mean
    tokens per call seen so far in this run."""
    made = sum(m["calls"] for m in metrics)
    if not made:
        return "Next iteration: no teacher call made yet, so no cost projection."
    teacher, loop = config.get("teacher", {}), config.get("loop", {})
    per_call = [sum(m.get(k, 0) for m in metrics) / made for k in ("prompt_tokens", "completion_tokens")]
    wrong = metrics[-1]["wrong"]
    chosen = wrong
    counts = loop.get("random_counts") or []
    if loop.get("augment") == "random" and len(counts) > metrics[-1]["iteration"]:
        chosen = counts[metrics[-1]["iteration"]]
    calls = chosen * teacher.get("samples_per_example", 1)
    prompt, completion = calls * per_call[0], calls * per_call[1]
    text = (f"Next iteration (projected): {calls} teacher calls ({chosen} seed examples x "
            f"{teacher.get('samples_per_example', 1)} samples), about {prompt:,.0f} prompt + {completion:,.0f} "
            f"completion tokens at this run's {sum(per_call):,.0f} tokens per call")
    if teacher.get("price_per_million"):
        text += f", costing about {price(teacher['price_per_million'], prompt, completion):.4g}"
    return text + "."


def _teacher_lines(store: RunStore, metrics: list[dict]) -> list[str]:
    """Per iteration: training's padding, what the teacher phase did (teacher_stats.json), why a run stopped."""
    lines = []
    for m in metrics:
        if m.get("padding_waste") is not None:
            lines.append(f"Iteration {m['iteration']}: trained {m.get('steps', '?')} steps, loss "
                         f"{m.get('train_loss', float('nan')):.3f}, {m['padding_waste']:.1%} of batch tokens padding.")
        path = store.path(m["iteration"], "teacher_stats.json")
        if path.exists():
            t = json.loads(path.read_text(encoding="utf-8"))
            lines.append(f"Iteration {m['iteration']}: {t['made']} teacher calls in {t['seconds']:.1f} s "
                         f"({t['req_per_s']:.1f} req/s), {t['retries']} retries, {t['failed']} failed"
                         + (f", {t['cached']} from the cache" if t["cached"] else "")
                         + (f", {t['skipped']} not made (budget)" if t["skipped"] else "") + ".")
        if m.get("stopped") == "budget":
            lines.append(f"The run stopped after iteration {m['iteration']}: the teacher budget was reached.")
    return lines


def _examples(store: RunStore, metrics: list[dict]) -> list[tuple[int, dict, dict]]:
    """A few accepted examples of each iteration beside their parents."""
    out = []
    for m in metrics:
        it = m["iteration"]
        if not store.has(it, "accepted.jsonl"):
            continue
        parents = {w["id"]: w for w in store.read_jsonl(it, "wrong.jsonl")}
        for ex in store.read_jsonl(it, "accepted.jsonl")[:EXAMPLES_PER_ITERATION]:
            out.append((it, parents.get(ex["parent_id"], {}), ex))
    return out


def _fields(ex: dict) -> str:
    skip = {"id", "origin", "parent_id", "iteration", "teacher_model", "student_prediction", "test_overlap"}
    return "; ".join(f"{k}: {v}" for k, v in ex.items() if k not in skip)


def gain_line(store: RunStore) -> str:
    """LLM2LLM's gain over iteration 0, with its spread when this run is one seed sample of `llm2llm effect`."""
    metrics = store.metrics()
    first, last = metrics[0], metrics[-1]
    n_test = len(store.read_jsonl(0, "pred_test.jsonl")) if store.has(0, "pred_test.jsonl") else 0
    line = (f"Gain over iteration 0 (plain fine-tuning): {last['test_accuracy'] - first['test_accuracy']:+.3f} test accuracy "
            f"({first['test_accuracy']:.3f} -> {last['test_accuracy']:.3f})")
    summary = store.root.parent.parent / "effect.json"
    name = {"llm2llm": "LLM2LLM", "random": "random augmentation"}  # effect's arms, as named on disk
    if summary.exists() and store.root.name in name:
        effect = json.loads(summary.read_text(encoding="utf-8"))
        ours = store.root.name
        other = next(arm for arm in name if arm != ours)
        g, h = effect["gain"][ours], effect["gain"][other]
        vs = effect.get("paired", {}).get("llm2llm-random")
        vs = (f" LLM2LLM - random, paired: {vs['mean']:+.3f}" + (f", 95% interval [{vs['low']:+.3f}, {vs['high']:+.3f}]"
              if vs["low"] is not None else "") + f": {vs['verdict']}.") if vs else ""
        return (f"{line}; {name[ours]} over {len(effect['seeds'])} seed samples: {g['mean']:+.3f} ± {g['sd']:.3f} "
                f"({name[other]}: {h['mean']:+.3f} ± {h['sd']:.3f}).{vs}")
    one = f"; one test example is {1 / n_test:.3f}" if n_test else ""
    return f"{line}, on one seed sample{one}. `llm2llm effect CONFIG` measures the spread over several."


def effect_lines(store: RunStore) -> list[str]:
    """For a run that is one seed sample of `llm2llm effect`: the paired differences over all its seed samples
    (from ../../effect.json), in the words of compare.paired_lines."""
    summary = store.root.parent.parent / "effect.json"
    if store.root.name not in ("llm2llm", "random") or not summary.exists():
        return []
    from .compare import paired_lines

    effect = json.loads(summary.read_text(encoding="utf-8"))
    return [line for line in paired_lines(effect) if line] if effect.get("paired") else []


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    store = RunStore(run_dir)
    metrics = store.metrics()
    if not metrics:
        raise UserError(f"{run_dir}: no metrics.jsonl yet: nothing to report")
    reject_reasons = {m["iteration"]: Counter(category(r["reason"]) for r in store.read_jsonl(m["iteration"], "rejected.jsonl"))
                      for m in metrics if store.has(m["iteration"], "rejected.jsonl")}
    plots = _plots(metrics, reject_reasons)
    head, rows = metrics_table(metrics)
    last = metrics[-1]
    summary = (f"{gain_line(store)} After iteration {last['iteration']}; the training set grew from "
               f"{metrics[0]['train_size']} to {last['train_size']} examples.")
    examples = _examples(store, metrics)
    config = yaml.safe_load((store.root / "config.yaml").read_text(encoding="utf-8")) or {}
    teacher_notes = _teacher_lines(store, metrics) + [projection(metrics, config)]

    md = ["# LLM2LLM run report", "", f"Run directory: `{store.root}`", "", summary, "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    paired = effect_lines(store)
    if paired:
        md += ["", "## Over the seed samples (`llm2llm effect`)", ""] + [paired[0], ""] + paired[1:]
    md += ["", "## Training and teacher", ""] + [f"- {line}" for line in teacher_notes]
    md += ["", "## Plots", ""] + [f"![{name}]({name}.png)" for name in plots]
    md += ["", "## Generated examples beside their parents", ""]
    for it, parent, ex in examples:
        md += [f"- iteration {it}: parent *{_fields(parent)}* → new *{_fields(ex)}*"]
    for name, png in plots.items():
        (store.root / f"{name}.png").write_bytes(png)
    md_path = store.root / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")

    esc = html.escape
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    images = "".join(f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     for name, png in plots.items())
    pairs = "".join(f"<tr><td>{it}</td><td>{esc(_fields(p))}</td><td>{esc(_fields(e))}</td></tr>"
                    for it, p, e in examples)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>LLM2LLM run report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}img{{margin:4px;border:1px solid #ddd}}</style>
</head><body><h1>LLM2LLM run report</h1><p>{esc(str(store.root))}</p><p id="summary">{esc(summary)}</p>
<h2>Per iteration</h2>{table}{_html_effect(paired)}<h2>Training and teacher</h2><ul id="teacher">{"".join(f"<li>{esc(x)}</li>" for x in teacher_notes)}</ul>
<h2>Plots</h2><div>{images}</div>
<h2>Generated examples beside their parents</h2>
<table><tr><th>iteration</th><th>parent (a seed example the student got wrong)</th><th>new example</th></tr>{pairs}</table>
</body></html>"""
    html_path = store.root / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path


def _html_effect(paired: list[str]) -> str:
    """The paired-differences markdown table as HTML (its first line is the caption)."""
    if not paired:
        return ""
    rows = [[html.escape(c.strip()) for c in line.strip("|").split("|")] for line in paired[1:] if "---" not in line]
    return (f"<h2>Over the seed samples</h2><p>{html.escape(paired[0])}</p><table id=\"paired\"><tr>"
            + "".join(f"<th>{c}</th>" for c in rows[0]) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:]) + "</table>")


def final_dataset(store: RunStore) -> list[dict]:
    """The last iteration's training set plus what its teacher round added: seed and synthetic, with lineage."""
    last = max(m["iteration"] for m in store.metrics())
    rows = store.read_jsonl(last, "train.jsonl")
    if store.has(last, "accepted.jsonl"):
        rows += store.read_jsonl(last, "accepted.jsonl")
    return rows
