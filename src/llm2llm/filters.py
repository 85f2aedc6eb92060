"""Turn teacher replies into new training examples: parse, validate, de-duplicate, check for leakage.

Nothing is dropped silently: every reply ends up accepted or rejected with its reason.
"""
from __future__ import annotations

import hashlib
import json

from datasketch import MinHash, MinHashLSH

from .config import FilterConfig
from .records import status
from .tasks import NOT_AN_EXAMPLE, Reject, Task

NUM_PERM = 128
TEST_OVERLAP = "overlaps the test set"
DUPLICATE = "duplicate of an existing example"
NEAR_DUPLICATE = "near-duplicate of an existing example"


def normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def synthetic_id(fields: dict, parent_id: str) -> str:
    """Derived from content, so a resumed run never holds the same example twice."""
    blob = json.dumps({"fields": fields, "parent": parent_id}, sort_keys=True, ensure_ascii=False)
    return "syn-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def minhash(text: str) -> MinHash:
    text = normalise(text)
    grams = {text[i:i + 4] for i in range(max(1, len(text) - 3))}
    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch([g.encode() for g in sorted(grams)])
    return m


class NearDuplicates:
    """Texts seen so far, and whether a new one is (nearly) one of them: MinHash LSH candidates,
    confirmed by their estimated Jaccard similarity."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        # datasketch finds no banding for thresholds near 1 (0.99: "too few bands"): above 0.9 the index gathers the
        # candidates at 0.9, and the Jaccard check below keeps only those at the threshold
        self.lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=NUM_PERM)
        self.exact: set[str] = set()
        self.hashes: dict[str, MinHash] = {}

    def add(self, text: str) -> None:
        key = normalise(text)
        if key in self.exact:
            return
        self.exact.add(key)
        self.hashes[key] = minhash(key)
        self.lsh.insert(key, self.hashes[key])

    def match(self, text: str) -> str | None:
        key = normalise(text)
        if key in self.exact:
            return DUPLICATE
        m = minhash(key)
        if any(self.hashes[k].jaccard(m) >= self.threshold for k in self.lsh.query(m)):
            return NEAR_DUPLICATE
        return None


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n words is one gram of its own."""
    words = normalise(text).split()
    if len(words) <= n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def keep(task: Task, calls: list[dict], known: list[dict], test: list[dict], iteration: int,
         teacher_model: str, cfg: FilterConfig | None = None) -> tuple[list[dict], list[dict]]:
    """(accepted, rejected) from the teacher calls ({parent, reply, ...}) of one iteration.

    `known` is every example already in the training set; `test` the held-out split, whose text
    must not come back as training data (dropped, or kept and flagged, as the config says).
    """
    cfg = cfg or FilterConfig()
    seen = NearDuplicates(cfg.near_duplicate_threshold)
    for ex in known:
        seen.add(ex[task.input_field])
    test_grams = set().union(*(ngrams(ex[task.input_field], cfg.leakage_ngram) for ex in test))
    accepted, rejected = [], []
    for call in calls:
        parent, reply = call["parent"], call["reply"]
        if status(reply) == "skipped":  # never asked (the budget ran out): nothing to keep or reject
            continue
        base = {"parent_id": parent["id"], "sample": call["sample"], "raw": reply["text"]}
        if status(reply) == "failed":
            rejected.append({**base, "reason": f"teacher call failed: {reply['error']}"})
            continue
        for fields in task.parse(reply["text"], parent):
            if isinstance(fields, Reject):
                rejected.append({**base, "reason": fields.reason, **({"example": fields.example} if fields.example else {})})
                continue
            text = fields[task.input_field]
            leaked = bool(ngrams(text, cfg.leakage_ngram) & test_grams)
            reason = TEST_OVERLAP if leaked and cfg.leakage_action == "drop" else seen.match(text)
            if reason:
                rejected.append({**base, "reason": reason, "example": fields})
                continue
            seen.add(text)
            accepted.append({"id": synthetic_id(fields, parent["id"]), **fields, "origin": "teacher",
                             "parent_id": parent["id"], "iteration": iteration, "teacher_model": teacher_model,
                             **({"test_overlap": True} if leaked else {})})
    return accepted, rejected


# what a rejected reply's reason is, in a few words: the report's plot and effect's table count these (the full
# reasons stay in rejected.jsonl)
CATEGORIES = ("copy of parent", "duplicate", "near-duplicate", "judge disagrees", "not an example", "invalid",
              "test overlap", "failed call")


def category(reason: str) -> str:
    """The category of a rejection reason; "failed call" also holds the judge's calls that failed or were not made
    (budget), "invalid" every reply or example that does not parse or check."""
    exact = {"copy of its parent": "copy of parent", DUPLICATE: "duplicate", NEAR_DUPLICATE: "near-duplicate",
             NOT_AN_EXAMPLE: "not an example", TEST_OVERLAP: "test overlap"}
    if reason in exact:
        return exact[reason]
    if reason.startswith(("teacher call failed", "judge: the call failed", "judge: not asked")):
        return "failed call"
    return "judge disagrees" if reason.startswith("judge:") else "invalid"


def counts(accepted: list[dict], rejected: list[dict]) -> dict:
    """The filters' figures for metrics.jsonl. `proposed`: the examples found in the replies."""
    reasons = [r["reason"] for r in rejected]
    return {"proposed": len(accepted) + sum(1 for r in rejected if "example" in r),
            "near_duplicates": reasons.count(NEAR_DUPLICATE) + reasons.count(DUPLICATE),
            "test_overlap": reasons.count(TEST_OVERLAP) + sum(1 for a in accepted if a.get("test_overlap")),
            "not_examples": reasons.count(NOT_AN_EXAMPLE),
            "judged_out": sum(1 for r in reasons if r.startswith("judge:"))}
