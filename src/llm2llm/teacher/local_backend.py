"""The in-process teacher: a transformers model (shared with the student when it is the same), batched generation,
and JSON-schema constrained decoding (llguidance)."""
from __future__ import annotations

import json

from .core import Calls


class JsonSchemaProcessor:
    """A transformers logits processor that lets each row of a batch generate only JSON matching its schema
    (llguidance's token masks); a row whose JSON is complete may only end."""

    def __init__(self, tokenizer, schemas: list[dict | None], lltokenizer):
        import llguidance

        self.eos = tokenizer.eos_token_id
        self.matchers = [None if schema is None else llguidance.LLMatcher(
            lltokenizer, llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(schema), defaults={"whitespace_flexible": False})) for schema in schemas]
        self.words, self.first = (lltokenizer.vocab_size + 31) // 32, True

    def __call__(self, input_ids, scores):
        import torch

        if not self.first:
            for matcher, token in zip(self.matchers, input_ids[:, -1].tolist()):
                if matcher is not None and not matcher.is_stopped():
                    matcher.consume_token(token)
        self.first = False
        mask = torch.full((len(self.matchers), self.words), -1, dtype=torch.int32)
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if matcher.is_stopped() or matcher.is_error():
                bit = 1 << (self.eos % 32)
                mask[row] = 0
                mask[row, self.eos // 32] = bit - (1 << 32) if bit >= 1 << 31 else bit  # as an int32
            else:
                matcher.unsafe_compute_mask_ptr(mask[row].data_ptr(), self.words * 4)
        bits = (mask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        allowed = bits.reshape(len(self.matchers), -1)[:, :scores.shape[1]].bool()
        return scores.masked_fill(~allowed, float("-inf"))


class LocalBackend:
    """Generate in-process with a transformers model (shared with the student when it is the same).
    Requests with a JSON schema are constrained to it unless `response_format` is "none"."""

    def __init__(self, model, tokenizer, batch_size: int, structured: bool = True):
        self.model, self.tokenizer, self.batch_size, self.structured = model, tokenizer, batch_size, structured
        self._lltokenizer = None

    def grammar(self, requests: list[dict]):
        schemas = [r.get("schema") if self.structured else None for r in requests]
        if not any(schemas):
            return []
        if self._lltokenizer is None:
            import llguidance.hf

            self._lltokenizer = llguidance.hf.from_tokenizer(self.tokenizer)
        return [JsonSchemaProcessor(self.tokenizer, schemas, self._lltokenizer)]

    def complete(self, items, todo: set[int], params, calls: Calls) -> None:
        """Batches are made over all requests, cached or not, and a batch with anything missing is
        generated whole: each reply then comes from the same batch, and so the same sampled text,
        however often the stage was interrupted."""
        import torch

        tok = self.tokenizer
        prompts = [tok.apply_chat_template(req["messages"], tokenize=False, add_generation_prompt=True)
                   for req in (job.request for job in items)]
        order = sorted(range(len(items)), key=lambda j: len(prompts[j]))
        tok.padding_side = "left"
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            wanted = [items[j].index for j in chunk if items[j].index in todo]
            started = [calls.start(i) for i in wanted]
            if not all(started):  # the budget does not allow the whole batch: none of it is made
                for i in (i for i, ok in zip(wanted, started) if ok):
                    calls.skip(i)
            if not wanted or not all(started):
                continue
            batch = tok([prompts[j] for j in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            # seeded by the requests' own keys: the same batch always samples the same text
            torch.manual_seed(int(items[chunk[0]].key[:8], 16))
            sample = params["temperature"] > 0
            with torch.inference_mode():
                out = self.model.generate(
                    **batch, max_new_tokens=params["max_tokens"], do_sample=sample,
                    temperature=params["temperature"] if sample else None,
                    top_p=params["top_p"] if sample else None, top_k=None,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                    logits_processor=self.grammar([items[j].request for j in chunk]))
            width = batch["input_ids"].shape[1]
            for row, j in enumerate(chunk):
                if items[j].index not in todo:
                    continue
                new = out[row, width:]
                new = new[new != tok.pad_token_id]
                calls.done(items[j].index, {"text": tok.decode(new, skip_special_tokens=True),
                                         "prompt_tokens": int(batch["attention_mask"][row].sum()),
                                         "completion_tokens": int(len(new))})
