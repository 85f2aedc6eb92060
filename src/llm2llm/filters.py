"""Turn teacher replies into new training examples: parse, validate, de-duplicate, check for leakage.

Nothing is dropped silently: every reply ends up accepted or rejected with its reason.
"""
from __future__ import annotations

import hashlib
import json

from .tasks import Reject, Task


def normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def synthetic_id(fields: dict, parent_id: str) -> str:
    """Derived from content, so a resumed run never holds the same example twice."""
    blob = json.dumps({"fields": fields, "parent": parent_id}, sort_keys=True, ensure_ascii=False)
    return "syn-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def keep(task: Task, calls: list[dict], known: list[dict], test: list[dict], iteration: int,
         teacher_model: str) -> tuple[list[dict], list[dict]]:
    """(accepted, rejected) from the teacher calls ({parent, reply, ...}) of one iteration.

    `known` is every example already in the training set; `test` the held-out split, whose inputs
    must never come back as training data.
    """
    seen = {normalise(ex[task.input_field]) for ex in known}
    test_inputs = {normalise(ex[task.input_field]) for ex in test}
    accepted, rejected = [], []
    for call in calls:
        parent, reply = call["parent"], call["reply"]
        base = {"parent_id": parent["id"], "sample": call["sample"], "raw": reply["text"]}
        if "error" in reply:
            rejected.append({**base, "reason": f"teacher call failed: {reply['error']}"})
            continue
        parsed = task.parse(reply["text"], parent)
        if isinstance(parsed, Reject):
            rejected.append({**base, "reason": parsed.reason})
            continue
        for fields in parsed:
            text = normalise(fields[task.input_field])
            reason = ("copy of a test example" if text in test_inputs
                      else "duplicate of an existing example" if text in seen else None)
            if reason:
                rejected.append({**base, "reason": reason, "example": fields})
                continue
            seen.add(text)
            accepted.append({"id": synthetic_id(fields, parent["id"]), **fields, "origin": "teacher",
                             "parent_id": parent["id"], "iteration": iteration, "teacher_model": teacher_model})
    return accepted, rejected
