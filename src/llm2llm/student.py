"""The student: load the base model, fine-tune it on a training set, and answer prompts greedily.

Training is the transformers Trainer on prompt/completion pairs (loss on the completion only, batches
grouped by length), with LoRA (peft) or full fine-tuning; it runs the same in-process or under
`accelerate launch`. (TRL's SFTTrainer does the same job; benchmarks/train_speed.py compares the
two.)
Prediction scores the candidate answers in one forward pass for classification and choice tasks,
and runs batched greedy generation (left padding, length-sorted; a finished row leaves its batch) for
generative tasks.
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
import itertools
import re
from pathlib import Path

from . import UserError, display, models
from .config import StudentConfig


def resolve_model(spec: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None) for a model given as a name (models.NAMES), an id, a dir
    or a .gguf file."""
    if spec in models.NAMES:
        path = models.gguf_path(spec)
        return str(path.parent), path.name
    path = Path(spec)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"{spec}: no such GGUF file")
        return str(path.parent), path.name
    if spec.startswith((".", "/", "~")) and not path.exists():
        raise UserError(f"{spec}: no such model directory")
    return spec, gguf_file  # a local directory or a Hugging Face hub id


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")  # "name" or "owner/name"


def check_model(spec: str, gguf_file: str | None, field: str) -> None:
    """Before anything is written: the model is a directory or file here, the embedded one installed, or a
    name shaped like a Hugging Face hub id (and in the local cache when HF_HUB_OFFLINE is set). No network."""
    try:
        where, gguf = resolve_model(spec, gguf_file)
    except UserError as err:
        raise UserError(f"{field}: {err}") from None
    if Path(where).is_dir():
        if gguf and not (Path(where) / gguf).is_file():
            raise UserError(f"{field}: no GGUF file '{gguf}' in {where}")
        return
    if not HUB_ID.fullmatch(where) or "--" in where or ".." in where:
        raise UserError(f"{field} '{spec}': no such directory or file here, and not a Hugging Face hub id")
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(where, gguf or "config.json"), str):
        raise UserError(f"{field} '{spec}': not in the local Hugging Face cache, and HF_HUB_OFFLINE is set")


@display.quiet
def load(spec: str, gguf_file: str | None = None):
    """(model, tokenizer) in float32 on CPU, or in bfloat16 on a GPU when one is present."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    where, gguf = resolve_model(spec, gguf_file)
    # a GGUF checkpoint is unpacked into a plain dense model: one that can be fine-tuned
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        if gguf:
            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except OSError as err:
        raise UserError(f"model '{spec}': cannot load: {str(err).splitlines()[0]}") from None
    if torch.cuda.is_available():
        model = model.to("cuda")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# -- training ---------------------------------------------------------------------------------
def training_rows(task, examples: list[dict]) -> list[dict]:
    return [{"prompt": task.student_prompt(ex), "completion": task.target(ex)} for ex in examples]


def encode(tokenizer, row: dict, max_length: int) -> dict:
    """prompt+completion+EOS as one sequence, tokenised exactly as scoring does; loss on the completion only
    (labels are -100 up to where the ids depart from the prompt's own), cut to max_length."""
    [(ids, start)] = tokenise_completions(tokenizer, row["prompt"], [row["completion"]])
    cut = len(ids) > max_length
    ids = ids[:max_length]
    labels = ([-100] * start + ids[start:])[:len(ids)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "cut": cut}


def fitting(encoded: list[dict], max_length: int) -> tuple[list[dict], dict]:
    """The encoded rows to train on, and how many were longer than max_length: `cut_rows` were cut to it (what
    fits of their answer is trained on), `dropped_rows` left out (their answer starts past it)."""
    kept = [e for e in encoded if any(label != -100 for label in e["labels"])]
    counts = {"cut_rows": sum(1 for e in kept if e["cut"]), "dropped_rows": len(encoded) - len(kept)}
    if not kept:
        raise UserError(f"student.max_length {max_length}: no training example's answer fits; raise it")
    return [{k: v for k, v in e.items() if k != "cut"} for e in kept], counts


def length_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[int]:
    """Indices in batches of near-equal length (sorted, ties broken at random), the batches in a random order
    that changes each epoch. transformers' group_by_length sorts only within mega-batches of 4+ batches
    (`len // (4 * batch_size)` of them), which is random order for the small sets this tool trains on."""
    import torch

    rng = torch.Generator().manual_seed(seed * 1000 + epoch)
    noise = torch.rand(len(lengths), generator=rng).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], noise[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    full = len(order) // batch_size  # a short last batch stays last, or it would shift every boundary after it
    return [i for b in torch.randperm(full, generator=rng).tolist() + list(range(full, len(batches)))
            for i in batches[b]]


class LengthBatchSampler:
    """A sampler over length_batches, one new order per epoch (each pass over it is an epoch)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def __iter__(self):
        self.epoch += 1
        return iter(length_batches(self.lengths, self.batch_size, self.seed, self.epoch - 1))

    def __len__(self) -> int:
        return len(self.lengths)


@display.quiet
def fit(base, tokenizer, rows: list[dict], cfg: StudentConfig, out_dir: Path, progress: bool = True):
    """Fine-tune a copy of `base` on prompt/completion rows with the transformers Trainer (peft for LoRA) and
    save it (adapter or weights) to out_dir: (trainer, stats). Batches are grouped by length, and padding is
    counted. Runs the same in one process or in each of `accelerate launch`'s."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    set_seed(cfg.seed)  # before the adapter is made: its initial weights come from this RNG
    encoded, too_long = fitting([encode(tokenizer, row, cfg.max_length) for row in rows], cfg.max_length)
    model = copy.deepcopy(base)
    # the Trainer turns use_cache off (with a KV cache, transformers would also skip the packed-sequence masks
    # that padding_free relies on); it is turned back on after training
    model_config = model.config
    if cfg.finetune == "lora":
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))
    tokenizer.padding_side = "right"  # training pads on the right; generation sets left for itself
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        seed=cfg.seed, data_seed=cfg.seed, lr_scheduler_type="linear", warmup_steps=0.05, logging_steps=5, save_strategy="no", report_to=[],
        disable_tqdm=not (progress and display.VERBOSE), use_cpu=not _has_gpu(), bf16=_has_gpu(),
        gradient_checkpointing=cfg.gradient_checkpointing)
    lengths = [len(e["input_ids"]) for e in encoded]

    class LengthGroupedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return LengthBatchSampler(lengths, args.per_device_train_batch_size, cfg.seed)

    if cfg.padding_free:  # one row per batch; position ids restart at each example, which keeps attention within it
        collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = LengthGroupedTrainer(model=model, args=args, train_dataset=Dataset.from_list(encoded),
                                   data_collator=collator)
    tokens = count_tokens(trainer)
    if not display.VERBOSE:  # our display instead of the Trainer's tqdm bar and log dicts
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if progress:
            trainer.add_callback(display.training_display("training", tokens))
    result = trainer.train()
    model_config.use_cache = True  # for evaluation, and in what is saved
    if trainer.accelerator.is_main_process:
        trainer.model.save_pretrained(out_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = result.metrics.get("train_runtime") or 0.0
    real, padded = tokens["real"], tokens["padded"]
    stats = {"train_loss": result.training_loss, "first_loss": losses[0] if losses else None,
             "last_loss": losses[-1] if losses else None, "steps": result.global_step, "train_seconds": seconds,
             "tokens": real, "tokens_per_s": round(real / seconds, 1) if seconds else None,
             "padding_waste": round(1 - real / padded, 4) if padded else None, "processes": trainer.args.world_size,
             **too_long}
    return trainer, stats


def count_tokens(trainer) -> dict:
    """Wrap the trainer's collator to count real and padded tokens per batch (this process's share)."""
    counts = {"real": 0, "padded": 0}
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        if mask is not None:
            counts["real"] += int(mask.sum())
            counts["padded"] += mask.numel()
        else:  # padding-free batches: one row of concatenated sequences
            counts["real"] += batch["input_ids"].numel()
            counts["padded"] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting
    return counts


def train(base, tokenizer, rows: list[dict], cfg: StudentConfig, out_dir: Path, progress: bool = True):
    """Fine-tune in this process: (the trained model, ready to evaluate, stats)."""
    trainer, stats = fit(base, tokenizer, rows, cfg, out_dir, progress)
    model = trainer.model
    if cfg.finetune == "lora":
        model = model.merge_and_unload()  # plain weights: faster to evaluate, and a base for the next round
    return model.eval(), stats


def train_launched(rows: list[dict], cfg: StudentConfig, out_dir: Path) -> dict:
    """Fine-tune in processes started by `accelerate launch` with cfg.accelerate_args (DDP, FSDP, DeepSpeed
    and the process count come from there); the model is saved to out_dir. Returns the stats."""
    import json
    import subprocess
    import sys

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out_dir / "student.json").write_text(cfg.model_dump_json(), encoding="utf-8")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *cfg.accelerate_args, "-m", "llm2llm.student",
           str(out_dir)]
    log = out_dir / "launch.log"
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"student.accelerate_args: `accelerate launch` failed (exit {done.returncode}), "
                        f"see {log}: {tail[0][:200]}")
    return json.loads((out_dir / "worker_stats.json").read_text(encoding="utf-8"))


def _launched_worker(out_dir: str) -> None:
    """One of `accelerate launch`'s processes: train on the rows that train_launched left in out_dir."""
    import json

    import torch

    out = Path(out_dir)
    cfg = StudentConfig.model_validate_json((out / "student.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    base, tokenizer = load(cfg.model, cfg.gguf_file)
    trainer, stats = fit(base, tokenizer, rows, cfg, out, progress=False)
    acc = trainer.accelerator
    acc.wait_for_everyone()
    waste = stats["padding_waste"] or 0.0
    mine = torch.tensor([float(stats["tokens"]), stats["tokens"] / (1 - waste) if waste < 1 else 0.0])
    real, padded = acc.reduce(mine.to(acc.device), reduction="sum").tolist()  # every process's share
    if acc.is_main_process:
        seconds = stats["train_seconds"]
        stats.update(tokens=int(real), tokens_per_s=round(real / seconds, 1) if seconds else None,
                     padding_waste=round(1 - real / padded, 4) if padded else None,
                     losses=[h["loss"] for h in trainer.state.log_history if "loss" in h])
        (out / "worker_stats.json").write_text(json.dumps(stats), encoding="utf-8")


@display.quiet
def load_trained(base, out_dir: Path, cfg: StudentConfig):
    """A model saved by `train`, for resuming a run after its training stage."""
    if cfg.finetune == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(copy.deepcopy(base), str(out_dir)).merge_and_unload().eval()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=base.dtype).to(base.device).eval()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# -- prediction -------------------------------------------------------------------------------
def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenise_completions(tokenizer, prompt: str, completions: list[str]) -> list[tuple[list[int], int]]:
    """Per completion: the ids of prompt + completion + EOS, tokenised as one text (training, scoring and vLLM
    scoring all do it this way), and where the completion starts: where those ids depart from the prompt's own."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    out = []
    for completion in completions:
        ids = tokenizer(prompt + completion + tokenizer.eos_token, add_special_tokens=False).input_ids
        out.append((ids, _common_prefix(prompt_ids, ids)))
    return out


def cut_sorted(lengths: list[int], max_rows: int, overhead: int = 64) -> list[tuple[int, int]]:
    """Cut ascending lengths into runs of at most max_rows, as (start, end), minimising the padded tokens plus
    `overhead` tokens per run (one forward pass's fixed cost, ~60 ms on 2 CPU cores for SmolLM2-135M): the
    long tail of a length distribution gets small batches of its own instead of padding a whole batch."""
    best = [0] + [float("inf")] * len(lengths)
    start_of = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + overhead + (end - start) * lengths[end - 1]
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    runs, end = [], len(lengths)
    while end:
        runs.append((start_of[end], end))
        end = start_of[end]
    return runs[::-1]


def score_candidates(model, tokenizer, prompts: list[str], candidates: list[list[str]], batch_size: int,
                     label: str = "evaluate") -> list[int]:
    """For each prompt, the index of the candidate completion (plus EOS) with the highest log-likelihood."""
    scores = candidate_logprobs(model, tokenizer, prompts, candidates, batch_size, label)
    return [max(range(len(row)), key=row.__getitem__) for row in scores]


def candidate_logprobs(model, tokenizer, prompts: list[str], candidates: list[list[str]], batch_size: int,
                       label: str = "evaluate") -> list[list[float]]:
    """For each prompt, the log-likelihood of each candidate completion plus EOS.

    Tokenised exactly as in training (prompt+completion+EOS; the completion starts where it departs
    from the tokenised prompt). The tokens every prompt starts with (a template's instructions) run
    once; each prompt's own tokens run once on copies of that KV cache, left-padded, in batches cut from
    the length-sorted prompts by `cut_sorted`; each candidate's few tokens then run on a copy of its
    prompt's cache. No generation loop, and no token computed twice.
    """
    import torch

    items = []  # per prompt: (shared prefix ids, [(tail ids, first scored tail position)])
    for prompt, cands in zip(prompts, candidates):
        full = tokenise_completions(tokenizer, prompt, cands)
        shared = max(1, min(start for _, start in full))  # tokens every candidate shares with the prompt
        items.append((full[0][0][:shared], [(ids[shared:], begin - shared) for ids, begin in full]))
    if not items:
        return []
    head = items[0][0][:min(len(seq) for seq, _ in items) - 1]  # what every prompt starts with, short of the end
    for seq, _ in items[1:]:
        head = head[:_common_prefix(head, seq)]
    order = sorted(range(len(items)), key=lambda k: (len(items[k][1]), len(items[k][0])))
    scores = [[] for _ in items]
    cache_arg = _cache_arg(model)
    batches = []  # a batch holds prompts with equally many candidates, of near-equal length
    for _, group in itertools.groupby(order, key=lambda k: len(items[k][1])):
        group = list(group)
        batches += [group[a:b] for a, b in cut_sorted([len(items[k][0]) for k in group], batch_size)]
    with torch.inference_mode(), display.counting(label, len(items)) as advance:
        head_cache = None
        if head:  # 0. the shared head, once
            head_cache = getattr(model(input_ids=torch.tensor([head], device=model.device), use_cache=True,
                                       logits_to_keep=1), cache_arg)
        for chunk in batches:
            for k, row in zip(chunk, _score_batch(model, [items[k] for k in chunk], head, head_cache, cache_arg,
                                                   tokenizer.pad_token_id)):
                scores[k] = row
            advance(len(chunk))
    return scores


def _score_batch(model, batch: list[tuple[list[int], list]], head: list[int], head_cache, cache_arg: str,
                 pad: int) -> list[list[float]]:
    """candidate_logprobs for one batch of prompts with equally many candidates: each prompt's own tokens after the
    shared head, then every candidate's tail on its own copy of its prompt's cache."""
    import torch

    dev, n_cands = model.device, len(batch[0][1])
    # 1. each prompt's own tokens, once, left-padded between the head and the end
    seqs = [seq[len(head):] for seq, _ in batch]
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    pos = len(head) + (mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones(len(batch), len(head), dtype=torch.long), mask], -1)
    cache = None
    if head:
        cache = copy.deepcopy(head_cache)
        cache.batch_repeat_interleave(len(batch))
    # only the last position's logits are needed: the LM head is a fifth of a small model's compute
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True,
                logits_to_keep=1, **{cache_arg: cache})
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()  # predicts each tail's first token
    cache = getattr(out, cache_arg)
    # 2. every candidate's tail but its last token (only what follows it is scored), on its own copy
    # of the prompt's cache; for one-token labels that is the label, to score the EOS after it
    tails = [tail for _, cands in batch for tail, _ in cands]
    tail_width = max(len(t) for t in tails) - 1
    if tail_width:
        cache.batch_repeat_interleave(n_cands)
        tail_ids = torch.full((len(tails), tail_width), pad, dtype=torch.long)
        next_ids = torch.zeros_like(tail_ids)  # the token each position's logits score
        tail_mask = torch.zeros_like(tail_ids)
        for row, tail in enumerate(tails):
            tail_ids[row, :len(tail) - 1] = torch.tensor(tail[:-1], dtype=torch.long)
            next_ids[row, :len(tail) - 1] = torch.tensor(tail[1:], dtype=torch.long)
            tail_mask[row, :len(tail) - 1] = 1
        tail_pos = mask.sum(-1).repeat_interleave(n_cands)[:, None] + torch.arange(tail_width)[None, :]
        out = model(input_ids=tail_ids.to(dev), position_ids=tail_pos.to(dev), **{cache_arg: cache},
                    attention_mask=torch.cat([mask.repeat_interleave(n_cands, 0), tail_mask], -1).to(dev))
        logits = out.logits.float()  # only the scored tokens' log-probabilities leave the device
        rest = (logits.gather(-1, next_ids.to(dev)[..., None])[..., 0] - logits.logsumexp(-1)).cpu()
    scores = []
    for row, (_, cands) in enumerate(batch):
        scores.append([])
        for c, (tail, skip) in enumerate(cands):
            flat = row * n_cands + c
            lps = [float(first[row, tail[0]])] + [float(rest[flat, j - 1]) for j in range(1, len(tail))]
            scores[-1].append(sum(lps[skip:]))
    return scores


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             label: str = "evaluate", stop: list[str] = (), done: dict[int, str] | None = None,
             on_batch=None) -> list[str]:
    """Greedy completions, in batches of length-sorted, left-padded prompts (see `greedy`); a sequence ends at
    EOS or at the first stop string (cut from the text). `done` (prompt index: text) holds the completions of an
    evaluation stopped part-way: a batch all of whose prompts are in it is not run again (the batches are the
    same on every call, so the rest are what they would have been); `on_batch({index: text})` gets each batch's
    completions as it ends."""
    import torch

    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    out_texts = [""] * len(prompts)
    # a stop string of n bytes lies within the last n tokens (+1 for a token that runs past its end)
    tail = max((len(s.encode()) for s in stop), default=0) + 1

    def stopped(tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens[-tail:], skip_special_tokens=True)
        return any(s in text for s in stop)

    with torch.inference_mode(), display.counting(label, len(prompts)) as advance:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            if done and all(k in done for k in chunk):
                for k in chunk:
                    out_texts[k] = done[k]
                advance(len(chunk))
                continue
            batch = tokenizer([prompts[k] for k in chunk], return_tensors="pt", padding=True,
                              add_special_tokens=False)
            completions = greedy(model, batch, max_new_tokens, tokenizer.eos_token_id, stopped if stop else None)
            for k, tokens in zip(chunk, completions):
                out_texts[k] = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
            if on_batch:
                on_batch({k: out_texts[k] for k in chunk})
            advance(len(chunk))
    return out_texts


def greedy(model, batch, max_new_tokens: int, eos_token_id, stopped=None) -> list[list[int]]:
    """The greedy continuation of each left-padded row of `batch` (input_ids, attention_mask), as token ids:
    up to max_new_tokens, ending after EOS or once `stopped(tokens)` says so. What `model.generate` does
    greedily, except that a finished row leaves the batch (and the KV cache) at once, so the rest run on
    fewer rows: a batch costs what its rows need, not its longest row times its size. Plain argmax, as
    vLLM and llama.cpp are asked for: a model's own generation_config (a repetition penalty) is not applied."""
    import torch

    dev = model.device
    eos = set(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])
    mask = batch["attention_mask"].to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_arg = _cache_arg(model)
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"].to(dev), attention_mask=mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1)
        cache, pos = getattr(out, cache_arg), pos[:, -1:]
        droppable = _rows_can_leave(cache)
        rows = list(range(mask.shape[0]))  # the batch's rows, by their place in `batch`
        tokens, done = [[] for _ in rows], [False] * len(rows)
        for step in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)
            for row, token in zip(rows, nxt.tolist()):
                if not done[row]:
                    tokens[row].append(token)
                    done[row] = token in eos or bool(stopped and stopped(tokens[row]))
            if all(done) or step == max_new_tokens - 1:
                break
            keep = [i for i, row in enumerate(rows) if not done[row]]
            if droppable and len(keep) < len(rows):
                index = torch.tensor(keep, device=dev)
                cache.batch_select_indices(index)
                rows, nxt, mask, pos = [rows[i] for i in keep], nxt[index], mask[index], pos[index]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], -1)
            pos = pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                        **{cache_arg: cache})
            cache = getattr(out, cache_arg)
    return tokens


def _rows_can_leave(cache) -> bool:
    """Whether rows can be dropped from this KV cache: true of transformers' growing key/value layers (full or
    sliding-window attention); not of static, quantised or recurrent-state (linear attention, SSM) caches, where
    a finished row stays in its batch, computed and ignored, as in `model.generate`."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def _cache_arg(model) -> str:
    """The name of the forward's KV-cache argument: transformers renamed `past_key_values` to `cache` (the old
    name goes in 5.40)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"


def cut_at_stop(text: str, stop) -> str:
    """The text up to (not including) the first stop string in it."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def shorten(tokenizer, prompts: list[str], limit: int) -> list[str]:
    """Each prompt, or for one longer than `limit` tokens its first and last limit/2 tokens with the middle cut
    out (the instructions and what the answer follows stay): training never shows the student more than
    student.max_length tokens, and a huge prompt would take minutes or run out of memory."""
    out = list(prompts)
    for k, ids in enumerate(tokenizer(prompts, add_special_tokens=False).input_ids):
        if len(ids) > limit:
            out[k] = tokenizer.decode(ids[:limit // 2]) + " ... " + tokenizer.decode(ids[len(ids) - limit // 2:])
    return out


def predict(model, tokenizer, task, examples: list[dict], batch_size: int, label: str = "evaluate",
            max_prompt_tokens: int | None = None, done: dict[str, str] | None = None, keep=None) -> list[str]:
    """The student's answer text for each example, from exactly the training prompt (a prompt longer than
    max_prompt_tokens is cut in the middle, see `shorten`). For generation, `done` (example id: text) holds the
    answers of an evaluation stopped part-way, whose finished batches are not run again, and `keep(answers)` gets
    all the answers so far, by example id, as each batch ends (the run dir keeps them for a resume)."""
    if not examples:
        return []
    prompts = [task.student_prompt(ex) for ex in examples]
    if max_prompt_tokens:
        prompts = shorten(tokenizer, prompts, max_prompt_tokens)
    if task.mode == "choices":
        cands = [task.candidates(ex) for ex in examples]
        best = score_candidates(model, tokenizer, prompts, cands, batch_size, label)
        return [c[b] for c, b in zip(cands, best)]
    ids = [str(ex["id"]) for ex in examples]
    asked = set(ids)
    answers = {i: text for i, text in (done or {}).items() if i in asked}

    def on_batch(batch: dict[int, str]) -> None:
        answers.update({ids[k]: text for k, text in batch.items()})
        keep(dict(answers))

    return generate(model, tokenizer, prompts, task.max_new_tokens, batch_size, label, task.stop,
                    {k: answers[i] for k, i in enumerate(ids) if i in answers}, on_batch if keep else None)


if __name__ == "__main__":  # `accelerate launch -m llm2llm.student OUT_DIR`, as started by train_launched
    import sys

    _launched_worker(sys.argv[1])
