"""`student.greedy` (finished rows leave the batch) against transformers' own greedy `generate`, on a tiny
randomly initialised Llama: the same tokens for every row of a left-padded batch whose rows end at different steps."""
import pytest
import torch

from llm2llm import student


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def left_padded(rows: list[list[int]]) -> dict:
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def hf_greedy(model, batch, max_new_tokens, eos):
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
                             eos_token_id=eos)
    rows = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        rows.append(row[:row.index(eos) + 1] if eos in row else row)
    return rows


PROMPTS = [[5, 9, 13], [7, 3, 22, 31, 8, 2, 17], [11], [4, 4, 29, 30, 6], [38, 1, 25, 19]]


@pytest.mark.parametrize("rows_leave", [True, False])
def test_greedy_equals_generate_with_rows_ending_at_different_steps(tiny, rows_leave, monkeypatch):
    """Rows leave the batch (transformers' dynamic cache), or, with a cache they cannot leave, stay in it."""
    calls = []
    real = student._rows_can_leave
    monkeypatch.setattr(student, "_rows_can_leave", lambda cache: calls.append(real(cache)) or rows_leave)
    batch = left_padded(PROMPTS)
    free = hf_greedy(tiny, batch, 12, eos=-1)  # no EOS: 12 tokens each; then the commonest token as EOS
    eos = max(range(40), key=lambda t: sum(row.count(t) for row in free))
    want = hf_greedy(tiny, batch, 12, eos)
    assert len({len(row) for row in want}) > 1, "the rows should end at different steps"
    with torch.inference_mode():
        got = student.greedy(tiny, batch, 12, eos)
    assert got == want
    assert calls == [True]  # the tiny Llama's own cache lets rows leave


def test_one_token_and_no_eos(tiny):
    batch = left_padded(PROMPTS[:1])
    with torch.inference_mode():
        assert student.greedy(tiny, batch, 1, None) == [hf_greedy(tiny, batch, 1, eos=-1)[0]]


def test_a_stop_callback_ends_a_row_there(tiny):
    batch = left_padded(PROMPTS)
    free = hf_greedy(tiny, batch, 10, eos=-1)
    with torch.inference_mode():
        got = student.greedy(tiny, batch, 10, eos_token_id=[-1], stopped=lambda tokens: len(tokens) >= 2 and tokens[-1] % 3 == 0)
    assert any(len(g) < 10 for g in got)
    for g, f in zip(got, free):  # a row ends at its first token (after the first) divisible by 3
        cut = next((j + 1 for j in range(1, len(f)) if f[j] % 3 == 0), len(f))
        assert g == f[:cut]


class CharTokenizer:
    """Enough of a tokenizer for `student.generate`: a character is a token (ids 1..39), 0 pads on the left."""
    eos_token_id, padding_side = 39, "left"

    def __call__(self, texts, return_tensors="pt", padding=True, add_special_tokens=False):
        return left_padded([[1 + ord(c) % 38 for c in t] for t in texts])

    def decode(self, tokens, skip_special_tokens=True):
        return "".join(chr(97 + t % 26) for t in tokens if t != self.eos_token_id)


def test_a_stopped_evaluation_goes_on_from_its_last_finished_batch(tiny, monkeypatch):
    """`predict` hands each batch's answers to `keep`, by example id; given them back as `done`, it runs only the
    batches not finished and returns what one uninterrupted evaluation returns."""
    from types import SimpleNamespace

    task = SimpleNamespace(mode="generate", max_new_tokens=6, stop=(), student_prompt=lambda ex: ex["text"])
    examples = [{"id": f"q{k}", "text": text} for k, text in enumerate(["ab", "hello", "xyz", "q", "abcdefg", "mn"])]
    tok, kept = CharTokenizer(), []
    whole = student.predict(tiny, tok, task, examples, 2, keep=kept.append)
    assert len(kept) == 3 and set(kept[-1]) == {ex["id"] for ex in examples}  # 3 batches of 2
    assert [kept[-1][ex["id"]] for ex in examples] == whole

    batches = []
    real = student.greedy
    monkeypatch.setattr(student, "greedy", lambda model, batch, *a, **k: batches.append(1) or real(model, batch, *a, **k))
    stopped_after_one = kept[0]  # the answers on disk when the run was stopped after its first batch
    again = []
    assert student.predict(tiny, tok, task, examples, 2, done=stopped_after_one, keep=again.append) == whole
    assert len(batches) == 2 and again[-1] == kept[-1]
    done_but_stale = {"q0": "made up", "gone": "an example no longer asked"}  # only ids asked are used
    assert student.predict(tiny, tok, task, examples[:1], 2, done=done_but_stale) == ["made up"]
