"""Generative evaluation on llama.cpp (student.engine: llamacpp) vs on transformers (ours, batched), and ours vs
transformers' own batched `model.generate`, in one run.

The GSM8K student of the strong-teacher study, Qwen2.5-Coder-0.5B-Instruct (its GGUF, de-quantized for training),
briefly LoRA-fine-tuned on --train GSM8K problems, then the same --prompts test problems answered greedily
(--max-new-tokens) both ways: transformers' batched generation of the merged model (student.predict, batch
--batch) and llama-server serving the GGUF with the adapter converted to GGUF (llamacpp_student, its parallel
slots; the adapter's conversion and the server's start are inside the timed part), and a third time with
`model.generate` over the same batches (a finished row stays in its batch until the last one ends: llm2llm's way
before its own greedy loop). Printed: each side's time, the ratios, how many answers (the parsed number) and
texts agree, and each side's accuracy. Each side runs once (the transformers ones after an untimed warm-up on two
prompts), transformers' batched generate first, then ours, then llama.cpp; the machine should be otherwise idle.

    python benchmarks/eval_llamacpp.py [--train 16] [--prompts 48] [--slots 8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from eval_speed import generate_batched  # noqa: E402
from llm2llm import data, llamacpp_student, student  # noqa: E402
from llm2llm.config import build_config  # noqa: E402
from llm2llm.tasks import make_task  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--train", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--slots", type=int, default=llamacpp_student.SLOTS)
    args = ap.parse_args()
    cfg = build_config({"task": {"type": "math", "max_new_tokens": args.max_new_tokens},
                        "student": {"model": args.model, "epochs": 1, "lr": 1e-4, "batch_size": 8,
                                    "max_length": 512, "engine": "llamacpp"},
                        "data": {"train": str(SHARED / "gsm8k" / "train.jsonl"),
                                 "test": str(SHARED / "gsm8k" / "test.jsonl"), "seed_size": args.train,
                                 "test_size": args.prompts, "test_seed": 1234}})
    task, seed, test = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    base, tok = student.load(cfg.student.model, cfg.student.gguf_file)
    engine = llamacpp_student.LlamaCppStudent(cfg.student, task, base, tok, args.slots)
    with tempfile.TemporaryDirectory() as tmp:
        model, stats = student.train(base, tok, student.training_rows(task, seed), cfg.student, Path(tmp))
        prompts = student.shorten(tok, [task.student_prompt(ex) for ex in test], cfg.student.max_length)
        generate_batched(model, tok, prompts[:2], 8, args.batch)  # warm-up, untimed: both transformers arms
        student.generate(model, tok, prompts[:2], 8, args.batch, "warm-up")
        t0 = time.time()
        peer = generate_batched(model, tok, prompts, args.max_new_tokens, args.batch)
        t_gen = time.time() - t0
        t0 = time.time()
        ours = student.predict(model, tok, task, test, args.batch, "transformers", cfg.student.max_length)
        t_hf = time.time() - t0
        t0 = time.time()
        theirs = engine.predict(task, test, Path(tmp), 0, "llama.cpp")
        t_cpp = time.time() - t0
    answers = [(task.extract(a), task.extract(b)) for a, b in zip(ours, theirs)]
    right = [sum(task.score(pair[k], ex) for pair, ex in zip(answers, test)) for k in (0, 1)]
    same_text = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
    print(f"{args.model}, LoRA trained on {len(seed)} GSM8K problems (loss {stats.get('train_loss', float('nan')):.3f}); "
          f"{len(test)} test problems, greedy, up to {args.max_new_tokens} new tokens")
    print(f"transformers' batched generate (merged model, batch {args.batch}): {t_gen:.1f} s; its text equals ours "
          f"on {sum(a == b for a, b in zip(peer, ours))}/{len(test)}")
    print(f"transformers, ours (merged model, batch {args.batch}): {t_hf:.1f} s, {right[0]} right "
          f"({t_gen / t_hf:.2f}x batched generate)")
    print(f"llama.cpp (GGUF + adapter, {args.slots} slots, conversion and start included): {t_cpp:.1f} s, "
          f"{right[1]} right")
    print(f"llamacpp_speedup={t_hf / t_cpp:.2f}  same_answer={sum(a == b for a, b in answers)}/{len(test)}  "
          f"same_text={same_text}/{len(test)}  ours_vs_generate={t_gen / t_hf:.2f}  "
          f"generate_same_text={sum(a == b for a, b in zip(peer, ours))}/{len(test)}")


if __name__ == "__main__":
    main()
