"""The records a run passes around and keeps, typed: a teacher request, its reply, a teacher call, a metrics row;
and the readers that also take their older forms (a reply's "skipped"/"error" keys, the metric `generated`).

Rows written by older versions stay readable: `status(reply)` and `metrics_row(row)` read both forms.
"""
from __future__ import annotations

from typing import Literal, TypedDict

from typing_extensions import NotRequired

Status = Literal["ok", "failed", "skipped"]  # skipped: never asked, the budget did not allow it


class Request(TypedDict):
    """One teacher call to make: the chat messages, and where it comes from (iteration, sample index)."""
    parent: dict
    iteration: int
    sample: int
    messages: list[dict]
    schema: NotRequired[dict | None]  # the JSON schema the reply must match


class Reply(TypedDict):
    text: str
    prompt_tokens: int
    completion_tokens: int
    status: NotRequired[Status]  # absent in replies written before it was added: see `status`
    error: NotRequired[str]  # why a failed call failed
    cached: NotRequired[bool]


class TeacherCall(Request):
    """A line of teacher_calls.jsonl: the request with its parent's id and the reply."""
    parent_id: str
    reply: Reply


class MetricsRow(TypedDict, total=False):
    """A line of metrics.jsonl (the main figures; the filters', the judge's and training's are added beside)."""
    iteration: int
    train_size: int
    seed_accuracy: float
    test_accuracy: float
    wrong: int
    calls: int  # teacher calls made or read from the cache (older rows: `generated`)
    accepted: int
    rejected: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    stopped: str


def status(reply: dict) -> Status:
    """A reply's status, also from the older form: a "skipped" key for a call not made, an "error" key for one
    that failed."""
    if "status" in reply:
        return reply["status"]
    return "skipped" if "skipped" in reply else "failed" if "error" in reply else "ok"


def metrics_row(row: dict) -> dict:
    """A metrics.jsonl row in today's names: `generated` (older rows) is `calls`."""
    if "generated" in row and "calls" not in row:
        row = {("calls" if k == "generated" else k): v for k, v in row.items()}
    return row
