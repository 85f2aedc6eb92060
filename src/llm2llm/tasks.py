"""Tasks: how to prompt the student, score its answer, and turn a wrong example into new ones.

Every task is a set of templates plus a checker. The built-in types (classification, math, choice)
are default templates; a custom task is the same classes with the user's fields and templates.
All methods are pure functions of their arguments.
"""
from __future__ import annotations

import math as _math
import re
from dataclasses import dataclass

from . import UserError
from .config import TaskConfig

Example = dict  # one record: id, the task's fields, origin, parent_id, iteration, teacher_model


@dataclass(frozen=True)
class Reject:
    reason: str


def _fill(template: str, values: dict) -> str:
    try:
        return template.format_map(values)
    except KeyError as err:
        raise UserError(f"task template uses {{{err.args[0]}}}, which is not a field of the data") from None


_CHATTER = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly)[,!.]?\s*)?(?:here(?:'s| is| are)\b[^:\n]*:|(?:new )?(?:example|text|sentence|review|request|query)\s*\d*\s*:)\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def clean_line(text: str) -> str:
    """The first line of a teacher reply with content, without list markers, lead-ins and quotes."""
    for line in text.splitlines():
        line = _BULLET.sub("", _CHATTER.sub("", line)).strip().strip('"“”\'`').strip()
        if line and not line.endswith(":"):  # "I can also write one:" introduces, it is not an example
            return line
    return ""


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str) -> float | None:
    """The final answer of a worked solution: the number after '####', else the last number."""
    if "####" in text:
        found = _NUMBER.findall(text.rsplit("####", 1)[1].split("\n", 1)[0])[:1]
    else:
        found = _NUMBER.findall(text)[-1:]
    if not found:
        return None
    try:
        return float(found[0].replace(",", "").rstrip("."))
    except ValueError:
        return None


class Task:
    """Base class: a generative task scored by `score`; subclasses override what differs."""

    mode = "generate"  # or "choices": score the candidate completions instead of generating
    default_fields: tuple[str, str] = ("input", "output")
    default_description = "the task"
    default_prompt = "{input}\n"
    default_target = " {output}"
    default_teacher = ""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.input_field = cfg.input_field or self.default_fields[0]
        self.output_field = cfg.output_field or self.default_fields[1]
        self.description = cfg.description or self.default_description
        self.prompt_template = cfg.prompt_template or self.default_prompt
        self.target_template = cfg.target_template or self.default_target
        self.teacher_template = cfg.teacher_template or self.default_teacher
        self.max_new_tokens = cfg.max_new_tokens
        self.stop = cfg.stop or []

    # -- data -------------------------------------------------------------------------------
    @property
    def fields(self) -> list[str]:
        return [self.input_field, self.output_field]

    def check(self, row: dict) -> str | None:
        """Why a data row is unusable (naming the field), or None when it is fine."""
        for name in self.fields:
            if name not in row:
                return f"missing field '{name}'"
            if not isinstance(row[name], str) or not row[name].strip():
                return f"field '{name}' must be a non-empty string"
        return None

    def values(self, ex: Example) -> dict:
        return {**ex, "input": ex[self.input_field], "output": ex[self.output_field],
                "description": self.description}

    # -- student ----------------------------------------------------------------------------
    def student_prompt(self, ex: Example) -> str:
        return _fill(self.prompt_template, self.values(ex))

    def target(self, ex: Example) -> str:
        return _fill(self.target_template, self.values(ex))

    def candidates(self, ex: Example) -> list[str]:
        raise NotImplementedError

    def extract(self, text: str):
        return " ".join(text.split()).lower()

    def score(self, answer, ex: Example) -> bool:
        return answer == self.extract(ex[self.output_field])

    # -- teacher ----------------------------------------------------------------------------
    def teacher_messages(self, ex: Example, student_answer: str | None = None) -> list[dict]:
        note = ""
        if student_answer is not None:
            note = f"A small model answered this example wrongly with: {student_answer.strip()[:300]}\n"
        content = _fill(self.teacher_template, {**self.values(ex), "student_note": note})
        return [{"role": "system", "content": "You write new, varied training examples for a small model."},
                {"role": "user", "content": content}]

    def parse(self, text: str, parent: Example) -> list[dict] | Reject:
        """The new examples (task fields only) in a teacher reply, or why there are none."""
        match = re.search(r"input\s*:\s*(.+?)\n\s*output\s*:\s*(.+)", text, re.IGNORECASE | re.DOTALL)
        if not match:
            return Reject("no 'Input:'/'Output:' pair")
        new = {self.input_field: match[1].strip(), self.output_field: clean_line(match[2])}
        return self._checked(new, parent)

    def _checked(self, new: dict, parent: Example) -> list[dict] | Reject:
        problem = self.check(new)
        if problem:
            return Reject(problem)
        if " ".join(new[self.input_field].split()).lower() == " ".join(parent[self.input_field].split()).lower():
            return Reject("copy of its parent")
        return [new]


class ClassificationTask(Task):
    mode = "choices"
    default_fields = ("text", "label")
    default_description = "text classification"
    default_prompt = "Task: {description}. Labels: {labels}.\nText: {input}\nLabel:"
    default_target = " {output}"
    default_teacher = (
        "Task: {description}. Possible labels: {labels}.\n"
        "Here is an example with the label \"{output}\":\n{input}\n{student_note}\n"
        "Write one new example of the same kind and with the same label \"{output}\". Use different "
        "words and details, but keep what makes it \"{output}\". Reply with the new text only, on one line."
    )

    def __init__(self, cfg: TaskConfig, labels: list[str]):
        super().__init__(cfg)
        self.labels = list(labels)  # empty only when no row has a label: `check` then names the field

    def check(self, row: dict) -> str | None:
        problem = super().check(row)
        if problem is None and row[self.output_field] not in self.labels:
            return f"field '{self.output_field}': label '{row[self.output_field]}' is not in the label set {self.labels}"
        return problem

    def values(self, ex: Example) -> dict:
        return {**super().values(ex), "labels": ", ".join(self.labels)}

    def candidates(self, ex: Example) -> list[str]:
        return [_fill(self.target_template, {**self.values(ex), "output": label, self.output_field: label})
                for label in self.labels]

    def extract(self, text: str):
        return text.strip()

    def score(self, answer, ex: Example) -> bool:
        return answer == ex[self.output_field]

    def parse(self, text: str, parent: Example) -> list[dict] | Reject:
        line = clean_line(text)
        if not line:
            return Reject("empty reply")
        if len(line) > max(400, 4 * len(parent[self.input_field])):
            return Reject("too long")
        return self._checked({self.input_field: line, self.output_field: parent[self.output_field]}, parent)


class MathTask(Task):
    default_fields = ("question", "answer")
    default_description = "grade-school math word problems"
    default_prompt = "Question: {input}\nAnswer:"
    default_target = " {output}"
    default_teacher = (
        "Here is a math word problem and its worked solution.\n"
        "Question: {input}\nSolution: {output}\n{student_note}\n"
        "Write one new word problem that needs the same kind of reasoning, with different names and "
        "numbers, and solve it step by step. Use exactly this format:\n"
        "Question: <the new problem>\nAnswer: <the worked solution>\n#### <the final number>"
    )

    def extract(self, text: str):
        return parse_number(text)

    def score(self, answer, ex: Example) -> bool:
        gold = parse_number(ex[self.output_field])
        return answer is not None and gold is not None and _math.isclose(answer, gold, rel_tol=1e-6, abs_tol=1e-6)

    def check(self, row: dict) -> str | None:
        problem = super().check(row)
        if problem is None and parse_number(row[self.output_field]) is None:
            return f"field '{self.output_field}': no final number in the answer"
        return problem

    def parse(self, text: str, parent: Example) -> list[dict] | Reject:
        match = re.search(r"question\s*:\s*(.+?)\n\s*(?:answer|solution)\s*:\s*(.+)", text, re.IGNORECASE | re.DOTALL)
        if not match:
            return Reject("no 'Question:'/'Answer:' pair")
        question, answer = match[1].strip(), match[2].strip()
        number = parse_number(answer)
        if number is None:
            return Reject("the answer has no final number")
        if "####" not in answer:
            answer = f"{answer}\n#### {number:g}"
        else:
            answer = answer[: answer.rindex("####")] + f"#### {number:g}"
        return self._checked({self.input_field: question, self.output_field: answer}, parent)


class ChoiceTask(Task):
    mode = "choices"
    default_fields = ("context", "label")
    default_description = "pick the correct option"
    default_prompt = "{description}\n{input}\n{options}\nAnswer:"
    default_target = " {output}"
    default_teacher = (
        "Here is a multiple-choice example ({description}). The correct option is {output}.\n"
        "{input}\n{options}\n{student_note}\n"
        "Write one new example of the same kind with {n_options} options and one correct answer. "
        "Use exactly this format:\nContext: <text>\n0: <option>\n1: <option>\n...\nAnswer: <number>"
    )

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.choices_field = cfg.choices_field

    @property
    def fields(self) -> list[str]:
        return [self.input_field, self.choices_field, self.output_field]

    def check(self, row: dict) -> str | None:
        for name in self.fields:
            if name not in row:
                return f"missing field '{name}'"
        if not isinstance(row[self.input_field], str) or not row[self.input_field].strip():
            return f"field '{self.input_field}' must be a non-empty string"
        options = row[self.choices_field]
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
            return f"field '{self.choices_field}' must be a list of at least 2 non-empty strings"
        label = row[self.output_field]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(options):
            return f"field '{self.output_field}' must be an option index from 0 to {len(options) - 1}"
        return None

    def values(self, ex: Example) -> dict:
        options = ex[self.choices_field]
        return {**super().values(ex), "options": "\n".join(f"{i}: {o}" for i, o in enumerate(options)),
                "n_options": len(options)}

    def candidates(self, ex: Example) -> list[str]:
        return [_fill(self.target_template, {**self.values(ex), "output": i, self.output_field: i})
                for i in range(len(ex[self.choices_field]))]

    def extract(self, text: str):
        found = re.search(r"\d+", text)
        return int(found[0]) if found else None

    def score(self, answer, ex: Example) -> bool:
        return answer == ex[self.output_field]

    def parse(self, text: str, parent: Example) -> list[dict] | Reject:
        context = re.search(r"context\s*:\s*(.+?)\n\s*0\s*[:.)]", text, re.IGNORECASE | re.DOTALL)
        options = re.findall(r"^\s*(\d+)\s*[:.)]\s*(.+?)\s*$", text, re.MULTILINE)
        answer = re.search(r"answer\s*:\s*(\d+)", text, re.IGNORECASE)
        if not context or not answer:
            return Reject("no 'Context:' or 'Answer:'")
        texts = [o for i, (n, o) in enumerate(options) if int(n) == i]
        want = len(parent[self.choices_field])
        if len(texts) != want:
            return Reject(f"expected {want} options, got {len(texts)}")
        return self._checked({self.input_field: context[1].strip(), self.choices_field: texts,
                              self.output_field: int(answer[1])}, parent)


class ExactTask(Task):
    """Custom generative task scored by normalised exact match of the whole answer."""

    default_teacher = (
        "Task: {description}.\nHere is an example.\nInput: {input}\nOutput: {output}\n{student_note}\n"
        "Write one new, different example of the same task. Use exactly this format:\nInput: <text>\nOutput: <text>"
    )

    def extract(self, text: str):
        line = text.strip().splitlines()[0] if text.strip() else ""
        return " ".join(line.split()).lower()


def make_task(cfg: TaskConfig, train_rows: list[dict] | None = None) -> Task:
    kind = cfg.checker if cfg.type == "custom" else {"classification": "label", "math": "number",
                                                     "choice": "choice"}[cfg.type]
    if kind == "label":
        field = cfg.output_field or ClassificationTask.default_fields[1]
        labels = cfg.labels or sorted({str(r[field]) for r in train_rows or [] if field in r})
        return ClassificationTask(cfg, labels)
    if kind == "number":
        return MathTask(cfg)
    if kind == "choice":
        return ChoiceTask(cfg)
    return ExactTask(cfg)
