"""Tasks: how to prompt the student, score its answer, and turn a wrong example into new ones.

Every task is a set of templates plus a checker. The built-in types (classification, math, choice)
are default templates; a custom task is the same classes with the user's fields and templates.
All methods are pure functions of their arguments.
"""
from __future__ import annotations

import json
import math as _math
import re
from dataclasses import dataclass

from . import UserError
from .config import TaskConfig

Example = dict  # one record: id, the task's fields, origin, parent_id, iteration, teacher_model


@dataclass(frozen=True)
class Reject:
    reason: str
    example: dict | None = None  # the parsed example, when there was one


def _fill(template: str, values: dict, field: str) -> str:
    try:
        return template.format_map(values)
    except KeyError as err:
        raise UserError(f"{field} uses {{{err.args[0]}}}, which is not a field of the data") from None


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


# lead-ins, refusals and placeholders: a teacher talking about the task instead of writing an example
_NOT_AN_EXAMPLE = re.compile(
    r"^\W*(?:sure\b|okay\b|certainly\b|here(?:'s| is| are)\b|(?:a |the )?new (?:example|text|sentence|review)\b|"
    r"example\s*\d|i'?m sorry|i am sorry|i apologi[sz]e|sorry,|i can(?:'?t|not)\b|as an ai\b)"
    r"|\bas an ai\b|\blanguage model\b|\bi (?:can(?:'?t|not)|am unable to|won'?t) (?:help|assist|provide|write|"
    r"generate|create)\b|^\W*$|\.\.\.\s*$|<[a-z _-]+>|\[(?:text|example|your [a-z ]+)\]",
    re.IGNORECASE)


def not_an_example(text: str, markers: frozenset[str] = frozenset()) -> bool:
    """True for chatter, refusals and template placeholders: texts that must never become training data.
    `markers` are the <...> markers the task's own data uses (CaseHOLD's <HOLDING> slot): format, not placeholders."""
    for marker in markers:
        text = text.replace(marker, " ")
    return bool(_NOT_AN_EXAMPLE.search(text.strip()))


_MARKER = re.compile(r"<[a-z _-]+>", re.IGNORECASE)


def data_markers(rows: list[dict], field: str) -> frozenset[str]:
    """The <...> markers that at least half the data's rows hold in `field` (e.g. CaseHOLD's <HOLDING>)."""
    found = [set(_MARKER.findall(row[field])) for row in rows if isinstance(row.get(field), str)]
    tally = {m: sum(m in f for f in found) for m in set().union(*found)} if found else {}
    return frozenset(m for m, n in tally.items() if 2 * n >= len(found))


def json_items(text: str) -> list | None:
    """The list of objects in a reply that should be JSON ({"examples": [...]}, a list, or one object);
    a broken or cut-off reply is repaired as far as it goes. None when there is no JSON at all."""
    import json_repair

    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        value = json_repair.loads(text[start:])
    if isinstance(value, dict):
        value = value.get("examples", [value]) if len(value) == 1 or "examples" in value else [value]
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)]


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


SYSTEM = "You write new, varied training examples for a small model. You reply with JSON only."
NOT_AN_EXAMPLE = "chatter, refusal or placeholder, not an example"


class Task:
    """Base class: a generative task scored by `score`; subclasses override what differs."""

    mode = "generate"  # or "choices": score the candidate completions instead of generating
    markers: frozenset[str] = frozenset()  # <...> markers of the data's inputs (make_task): kept, never placeholders
    default_fields: tuple[str, str] = ("input", "output")
    default_description = "the task"
    default_prompt = "{input}\n"
    default_target = " {output}"
    default_teacher = (
        "Task: {description}.\nExamples:\n{examples}\n{student_note}\n"
        "Write {n} new examples of the same task, in the same JSON format. Make them different from the "
        "examples above and from each other."
    )

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

    def check_templates(self, ex: Example) -> None:
        """Fill every template (prompt, target, teacher, judge) with a data row, and with the fields that a new
        example from the teacher has, so that a template naming a missing field stops the run before anything
        is loaded or written, with the config field named."""
        new = {**{name: ex[name] for name in self.fields}, "id": ex["id"], "origin": "teacher",
               "parent_id": ex["id"], "iteration": 1, "teacher_model": ""}
        for shape in (ex, new):
            try:
                self.student_prompt(shape), self.target(shape), self.teacher_messages(shape, "", [shape], 1)
                if self.mode == "choices":
                    self.candidates(shape)
                self.judge_messages(shape)
            except UserError as err:
                if shape is ex:
                    raise
                raise UserError(f"{str(err).split(', which')[0]}, which the teacher's new examples lack (they "
                                f"have only {', '.join(self.fields)})") from None

    # -- student ----------------------------------------------------------------------------
    def student_prompt(self, ex: Example) -> str:
        return _fill(self.prompt_template, self.values(ex), "task.prompt_template")

    def target(self, ex: Example) -> str:
        return _fill(self.target_template, self.values(ex), "task.target_template")

    def candidates(self, ex: Example) -> list[str]:
        raise NotImplementedError

    def extract(self, text: str):
        return " ".join(text.split()).lower()

    def score(self, answer, ex: Example) -> bool:
        return answer == self.extract(ex[self.output_field])

    # -- teacher ----------------------------------------------------------------------------
    def kind(self, ex: Example):
        """What few-shot examples must share with the parent (classification: the label); None: anything."""
        return None

    def item(self, ex: Example) -> dict:
        """An example as a JSON item of the teacher's reply (the fields of `item_schema`)."""
        return {name: ex[name] for name in self.item_schema(ex)}

    def item_schema(self, parent: Example) -> dict:
        """JSON schema properties of one new example."""
        return {self.input_field: {"type": "string", "minLength": 1}, self.output_field: {"type": "string", "minLength": 1}}

    def kept_markers(self, parent: Example) -> list[str]:
        """The data's markers in the parent's input, in their order there: a new example must hold them too."""
        return sorted((m for m in self.markers if m in parent[self.input_field]), key=parent[self.input_field].index)

    def reply_schema(self, parent: Example, n: int) -> dict:
        """The JSON schema of a teacher reply: {"examples": [n new examples]}."""
        props = self.item_schema(parent)
        kept = self.kept_markers(parent)
        if kept:  # the input must hold the parent's markers; plain characters around them, so that the pattern means
            # the same on the raw JSON text (llama.cpp's grammar) as on the decoded string (llguidance, OpenAI)
            text = r'[^"\\\x00-\x1f]*'
            props[self.input_field] = {"type": "string", "pattern": "^" + text + text.join(map(re.escape, kept)) + text + "$"}
        item = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
        return {"type": "object", "additionalProperties": False, "required": ["examples"],
                "properties": {"examples": {"type": "array", "items": item, "minItems": 1, "maxItems": n}}}

    def format_hint(self, parent: Example) -> str:
        keys = ", ".join(f'"{k}"' for k in self.item_schema(parent))
        return f'Reply with JSON only: an object {{"examples": [...]}} with one object per new example, with the keys {keys}.'

    def teacher_messages(self, ex: Example, student_answer: str | None = None, shots: list[Example] = (),
                         n: int = 1) -> list[dict]:
        note = ""
        if student_answer is not None:
            note = f"A small model answered the last example wrongly with: {student_answer.strip()[:300]}\n"
        # the examples are shown in the reply's own JSON format: small teachers continue a pattern far better
        # than they follow a description of one
        shown = json.dumps({"examples": [self.item(s) for s in [*shots, ex]]}, ensure_ascii=False)
        values = {**self.values(ex), "student_note": note, "n": n, "examples": shown, "format": self.format_hint(ex)}
        content = _fill(self.teacher_template, values, "task.teacher_template").replace("\n\n\n", "\n\n")
        kept = self.kept_markers(ex)
        if kept:  # small teachers drop a slot marker unless told (CaseHOLD's <HOLDING>), and such an example is rejected
            content += (f"\nEach new \"{self.input_field}\" must contain {' and '.join(kept)} exactly as the examples "
                        "do: it marks where the answer belongs.")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]

    def parse(self, text: str, parent: Example) -> list[dict | Reject]:
        """The new examples (task fields only) in a teacher reply, each checked: a field dict, or a Reject
        saying why not. JSON replies are read (and repaired when cut off); plain-text replies in the task's
        old line format are read as a fallback."""
        items = json_items(text)
        if items is None:
            found = self.parse_text(text, parent)
            out = [found] if isinstance(found, (dict, Reject)) else found
        elif not items:
            return [Reject("no examples in the JSON reply")]
        else:
            out = [self.from_item(item, parent) for item in items]
        return [x if isinstance(x, Reject) else self._checked(x, parent) for x in out]

    def from_item(self, item: dict, parent: Example) -> dict | Reject:
        return {name: item[name].strip() if isinstance(item.get(name), str) else item.get(name) for name in self.fields}

    def parse_text(self, text: str, parent: Example) -> dict | Reject:
        match = re.search(r"input\s*:\s*(.+?)\n\s*output\s*:\s*(.+)", text, re.IGNORECASE | re.DOTALL)
        if not match:
            return Reject("no JSON and no 'Input:'/'Output:' pair")
        return {self.input_field: match[1].strip(), self.output_field: clean_line(match[2])}

    def _checked(self, new: dict, parent: Example) -> dict | Reject:
        problem = self.check(new)
        if problem:
            return Reject(problem, new)
        if not_an_example(new[self.input_field], self.markers):
            return Reject(NOT_AN_EXAMPLE, new)
        missing = [m for m in self.kept_markers(parent) if m not in new[self.input_field]]
        if missing:
            return Reject(f"no {missing[0]} in '{self.input_field}', which its parent has", new)
        if " ".join(new[self.input_field].split()).lower() == " ".join(parent[self.input_field].split()).lower():
            return Reject("copy of its parent", new)
        return new

    # -- judge: the teacher, asked to do the task itself, must agree with a new example --------
    def judge_messages(self, ex: Example) -> list[dict] | None:
        return None  # this task has no independent check

    def judge_schema(self, ex: Example) -> dict | None:
        """The reply's JSON schema; None for a free-text reply."""
        raise NotImplementedError

    def judge_verdict(self, text: str, ex: Example) -> str | None:
        """None when the judge's answer agrees with the example, else why not."""
        raise NotImplementedError


def _judge_messages(content: str) -> list[dict]:
    return [{"role": "system", "content": "You answer exactly and reply with JSON only."},
            {"role": "user", "content": content}]


def _first_value(text: str, key: str):
    items = json_items(text)
    return items[0].get(key) if items else None


class ClassificationTask(Task):
    mode = "choices"
    default_fields = ("text", "label")
    default_description = "text classification"
    default_prompt = "Task: {description}. Labels: {labels}.\nText: {input}\nLabel:"
    default_target = " {output}"
    default_teacher = (
        "Task: {description}. Possible labels: {labels}.\n"
        "Examples with the label \"{output}\":\n{examples}\n{student_note}\n"
        "Write {n} new examples with the label \"{output}\", in the same JSON format. Make them different from the "
        "examples above and from each other."
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
        return [_fill(self.target_template, {**self.values(ex), "output": label, self.output_field: label},
                      "task.target_template")
                for label in self.labels]

    def extract(self, text: str):
        return text.strip()

    def score(self, answer, ex: Example) -> bool:
        return answer == ex[self.output_field]

    def kind(self, ex: Example):
        return ex[self.output_field]

    def _longest(self, parent: Example) -> int:
        return max(400, 4 * len(parent[self.input_field]))

    def item_schema(self, parent: Example) -> dict:
        return {self.input_field: {"type": "string", "minLength": 8, "maxLength": self._longest(parent)}}

    def from_item(self, item: dict, parent: Example) -> dict | Reject:
        text = item.get(self.input_field)
        text = text.strip() if isinstance(text, str) else text
        new = {self.input_field: text, self.output_field: parent[self.output_field]}
        if isinstance(text, str) and len(text) > self._longest(parent):
            return Reject("too long", new)
        return new

    def parse_text(self, text: str, parent: Example) -> dict | Reject:
        line = clean_line(text)
        if not line:
            return Reject("empty reply")
        return self.from_item({self.input_field: line}, parent)

    def judge_messages(self, ex: Example) -> list[dict]:
        labels = ", ".join(self.labels)
        return _judge_messages(f"Task: {self.description}. Possible labels: {labels}.\nText: {ex[self.input_field]}\n"
                               f"Which label fits the text? Reply with JSON only: {{\"label\": one of {labels}}}.")

    def judge_schema(self, ex: Example) -> dict:
        return {"type": "object", "properties": {"label": {"type": "string", "enum": self.labels}},
                "required": ["label"], "additionalProperties": False}

    def judge_verdict(self, text: str, ex: Example) -> str | None:
        label = _first_value(text, "label")
        if label is None:  # no JSON: the first label named in the reply
            named = sorted((text.lower().find(x.lower()), x) for x in self.labels if x.lower() in text.lower())
            label = named[0][1] if named else None
        return None if label == ex[self.output_field] else f"judge: the teacher labels it '{label}'"


class MathTask(Task):
    default_fields = ("question", "answer")
    default_description = "grade-school math word problems"
    default_prompt = "Question: {input}\nAnswer:"
    default_target = " {output}"
    default_teacher = (
        "Here are math word problems with worked solutions:\n{examples}\n{student_note}\n"
        "Write {n} new word problems that need the same kind of reasoning as the last one, with different names "
        "and numbers, in the same JSON format. Solve each step by step and end its answer with \"#### <the final "
        "number>\"."
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

    def item_schema(self, parent: Example) -> dict:
        return {self.input_field: {"type": "string", "minLength": 10},
                self.output_field: {"type": "string", "minLength": 3}}

    def from_item(self, item: dict, parent: Example) -> dict | Reject:
        question, answer = item.get(self.input_field), item.get(self.output_field)
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = f"#### {answer:g}"
        if not isinstance(question, str) or not isinstance(answer, str):
            return Reject(f"needs '{self.input_field}' and '{self.output_field}' as text", item)
        question, answer = question.strip(), answer.strip()
        number = parse_number(answer)
        if number is None:
            return Reject("the answer has no final number", {self.input_field: question, self.output_field: answer})
        head = answer[: answer.rindex("####")].rstrip() if "####" in answer else answer
        return {self.input_field: question, self.output_field: f"{head}\n#### {number:g}".lstrip()}

    def parse_text(self, text: str, parent: Example) -> dict | Reject:
        match = re.search(r"question\s*:\s*(.+?)\n\s*(?:answer|solution)\s*:\s*(.+)", text, re.IGNORECASE | re.DOTALL)
        if not match:
            return Reject("no JSON and no 'Question:'/'Answer:' pair")
        return self.from_item({self.input_field: match[1], self.output_field: match[2]}, parent)

    # The judge works the problem in free text, the way GSM8K's answers are written: under a JSON schema the 1.5B
    # teacher wrote a plan in "solution" and guessed the number (4 of 32 seed problems right, against 11 of 32 in free
    # text, 2026-12-06, docs/results.md)
    def judge_messages(self, ex: Example) -> list[dict]:
        return [{"role": "user", "content": "Solve this problem. Work it out step by step, writing each calculation, "
                 "then give the final answer on its own last line as '#### <number>'.\n"
                 f"Question: {ex[self.input_field]}"}]

    def judge_schema(self, ex: Example) -> None:
        return None

    def judge_verdict(self, text: str, ex: Example) -> str | None:
        found = parse_number(text)
        if self.score(found, ex):
            return None
        gold = parse_number(ex[self.output_field])
        return f"judge: the teacher re-solves it to {found if found is None else f'{found:g}'}, not {gold:g}"


class ChoiceTask(Task):
    mode = "choices"
    default_fields = ("context", "label")
    default_description = "pick the correct option"
    default_prompt = "{description}\n{input}\n{options}\nAnswer:"
    default_target = " {output}"
    default_teacher = (
        "Here are multiple-choice examples ({description}); \"{output_field}\" is the number of the correct option, "
        "counting from 0:\n{examples}\n{student_note}\nWrite {n} new examples of the same kind, in the same JSON "
        "format, each with {n_options} options and exactly one correct answer. Make them different from the "
        "examples above and from each other."
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
                "n_options": len(options), "output_field": self.output_field}

    def candidates(self, ex: Example) -> list[str]:
        return [_fill(self.target_template, {**self.values(ex), "output": i, self.output_field: i},
                      "task.target_template")
                for i in range(len(ex[self.choices_field]))]

    def extract(self, text: str):
        found = re.search(r"\d+", text)
        return int(found[0]) if found else None

    def score(self, answer, ex: Example) -> bool:
        return answer == ex[self.output_field]

    def item_schema(self, parent: Example) -> dict:
        k = len(parent[self.choices_field])
        return {self.input_field: {"type": "string", "minLength": 10},
                self.choices_field: {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": k,
                                     "maxItems": k},
                self.output_field: {"type": "integer", "minimum": 0, "maximum": k - 1}}

    def from_item(self, item: dict, parent: Example) -> dict | Reject:
        new = super().from_item(item, parent)
        want, got = len(parent[self.choices_field]), new[self.choices_field]
        if isinstance(got, list) and len(got) != want:
            return Reject(f"expected {want} options, got {len(got)}", new)
        return new

    def _checked(self, new: dict, parent: Example) -> dict | Reject:
        new = super()._checked(new, parent)
        if isinstance(new, Reject) or self.cfg.answer_position == "as_written":
            return new
        return self.answer_at(new, parent[self.output_field])

    def answer_at(self, ex: dict, position: int) -> dict:
        """The example with its correct option swapped into `position` (the option there takes its old place)."""
        options, right = list(ex[self.choices_field]), ex[self.output_field]
        options[right], options[position] = options[position], options[right]
        return {**ex, self.choices_field: options, self.output_field: position}

    def parse_text(self, text: str, parent: Example) -> dict | Reject:
        context = re.search(r"context\s*:\s*(.+?)\n\s*0\s*[:.)]", text, re.IGNORECASE | re.DOTALL)
        options = re.findall(r"^\s*(\d+)\s*[:.)]\s*(.+?)\s*$", text, re.MULTILINE)
        answer = re.search(r"answer\s*:\s*(\d+)", text, re.IGNORECASE)
        if not context or not answer:
            return Reject("no JSON and no 'Context:' or 'Answer:'")
        texts = [o for i, (n, o) in enumerate(options) if int(n) == i]
        return self.from_item({self.input_field: context[1], self.choices_field: texts,
                               self.output_field: int(answer[1])}, parent)

    def judge_messages(self, ex: Example) -> list[dict]:
        return _judge_messages(f"{self.description}\n{ex[self.input_field]}\n{self.values(ex)['options']}\n"
                               "Which option is correct? Reply with JSON only: {\"answer\": <the option number>}.")

    def judge_schema(self, ex: Example) -> dict:
        return {"type": "object", "additionalProperties": False, "required": ["answer"],
                "properties": {"answer": {"type": "integer", "enum": list(range(len(ex[self.choices_field])))}}}

    def judge_verdict(self, text: str, ex: Example) -> str | None:
        answer = _first_value(text, "answer")
        answer = answer if isinstance(answer, int) else self.extract(text)
        return None if answer == ex[self.output_field] else f"judge: the teacher picks option {answer}"


class ExactTask(Task):
    """Custom generative task scored by normalised exact match of the whole answer."""

    def extract(self, text: str):
        line = text.strip().splitlines()[0] if text.strip() else ""
        return " ".join(line.split()).lower()


def make_task(cfg: TaskConfig, train_rows: list[dict] | None = None) -> Task:
    task = _task_of_kind(cfg, train_rows)
    task.markers = data_markers(train_rows or [], task.input_field)
    return task


def _task_of_kind(cfg: TaskConfig, train_rows: list[dict] | None) -> Task:
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
