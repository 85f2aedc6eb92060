"""judge: auto measures both judges on the seed and keeps the one that agrees more (stand-in teacher and embedder)."""
import json

from llm2llm import judge as judges
from llm2llm.config import TaskConfig
from llm2llm.tasks import make_task

SEED = [{"id": str(i), "text": f"request {i}", "label": "alarm" if i % 2 else "music"} for i in range(10)]


class Embedding:
    """An embedding judge stand-in: only its measured leave-one-out agreement matters here."""

    def __init__(self, agreement):
        self.seed_agreement, self.task = agreement, None


class Teacher:
    """Labels the first `right` examples it is asked about correctly, the rest wrongly; counts what it is asked."""

    def __init__(self, right):
        self.right, self.asked = right, []

    def complete(self, requests, label="teacher", **overrides):
        out = []
        for r in requests:
            self.asked.append((r["iteration"], overrides.get("temperature")))
            truth = r["parent"]["label"]
            wrong = "music" if truth == "alarm" else "alarm"
            answer = truth if len(self.asked) <= self.right else wrong
            out.append({"text": json.dumps({"label": answer}), "prompt_tokens": 10, "completion_tokens": 3})
        return out


def pick(kind, embedding, teacher, n=8):
    task = make_task(TaskConfig(type="classification", description="intent"), SEED)
    said = []
    judge, figures = judges.pick(kind, embedding, task, SEED, teacher, n, said.append)
    return judge, figures, said


def test_auto_keeps_the_teacher_when_it_agrees_more():
    teacher = Teacher(right=7)
    judge, figures, said = pick("auto", Embedding(0.6), teacher)
    assert isinstance(judge, judges.TeacherJudge) and figures["chosen"] == "teacher"
    assert figures["teacher"] == 7 / 8 and figures["embedding"] == 0.6
    assert figures["probe"] == {"judge_calls": 8, "judge_failed": 0, "judge_prompt_tokens": 80,
                                "judge_completion_tokens": 24}
    assert teacher.asked == [(-1, 0.0)] * 8  # iteration -1 (cached apart), greedy
    assert "embedding judge" in said[0] and "60%" in said[0] and "88% of 8" in said[0]


def test_auto_keeps_the_embedding_judge_when_it_agrees_as_much_or_more():
    embedding = Embedding(0.75)
    judge, figures, _ = pick("auto", embedding, Teacher(right=6))  # 6/8 = 0.75: a tie costs no calls later
    assert judge is embedding and figures["chosen"] == "embedding"


def test_an_explicit_choice_is_kept_and_a_zero_probe_asks_nothing():
    embedding, teacher = Embedding(0.1), Teacher(right=8)
    judge, figures, _ = pick("embedding", embedding, teacher)
    assert judge is embedding and "teacher" not in figures and teacher.asked == []
    judge, figures, _ = pick("auto", embedding, teacher, n=0)
    assert judge is embedding and teacher.asked == []
