import re

import pytest

from llm2llm.config import TaskConfig
from llm2llm.tasks import (NOT_AN_EXAMPLE, ChoiceTask, ClassificationTask, ExactTask, MathTask, Reject, clean_line,
                           data_markers, json_items, make_task, not_an_example, parse_number)


def cls_task(**kw):
    return make_task(TaskConfig(type="classification", description="sentiment", **kw),
                     [{"text": "a", "label": "negative"}, {"text": "b", "label": "positive"}])


@pytest.mark.parametrize("text,value", [
    ("so 3 + 4 = 7\n#### 7", 7.0),
    ("#### 1,234", 1234.0),
    ("the answer is 12.5 dollars.", 12.5),
    ("first 3 then 40", 40.0),
    ("#### -5", -5.0),
    ("no number here", None),
    ("#### none\nbut 3 earlier", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("raw,clean", [
    ('Here is a new example: "turn on the lights"', "turn on the lights"),
    ("Sure! Here's a new movie review sentence:\nwhat a dull film", "what a dull film"),
    ("1. play some jazz", "play some jazz"),
    ("\n\n- wake me at 7\nmore text", "wake me at 7"),
    ("Example 2: it rained", "it rained"),
    ("   ", ""),
    ('I can also create a new example:\n"book a table for two"', "book a table for two"),
])
def test_clean_line(raw, clean):
    assert clean_line(raw) == clean


def test_classification_labels_prompt_and_candidates():
    task = cls_task()
    assert isinstance(task, ClassificationTask)
    assert task.labels == ["negative", "positive"]
    ex = {"id": "1", "text": "great fun", "label": "positive"}
    assert task.student_prompt(ex) == "Task: sentiment. Labels: negative, positive.\nText: great fun\nLabel:"
    assert task.target(ex) == " positive"
    assert task.candidates(ex) == [" negative", " positive"]
    assert task.score(task.extract(" positive"), ex)
    assert not task.score(task.extract(" negative"), ex)


def test_classification_check_names_field_and_label_set():
    task = cls_task()
    assert task.check({"text": "x", "label": "positive"}) is None
    assert "missing field 'label'" in task.check({"text": "x"})
    assert "not in the label set" in task.check({"text": "x", "label": "neutral"})
    assert "must be a non-empty string" in task.check({"text": 3, "label": "positive"})


def test_classification_parse_keeps_parent_label_and_rejects_copies():
    task = cls_task()
    parent = {"id": "p", "text": "great fun", "label": "positive"}
    assert task.parse("Here is a new review: 'a lovely film'", parent) == [{"text": "a lovely film", "label": "positive"}]
    assert task.parse("Great   FUN", parent) == [Reject("copy of its parent", {"text": "Great   FUN", "label": "positive"})]
    assert task.parse("\n \n", parent) == [Reject("empty reply")]
    assert task.parse("x" * 1000, parent)[0].reason == "too long"


def test_explicit_labels_and_custom_templates():
    task = make_task(TaskConfig(type="classification", labels=["no", "yes"], input_field="q", output_field="a",
                                prompt_template="Q: {q}\nA:"), [])
    ex = {"q": "is it?", "a": "yes"}
    assert task.student_prompt(ex) == "Q: is it?\nA:"
    assert task.candidates(ex) == [" no", " yes"]


def test_show_student_answer_in_teacher_messages():
    task = cls_task()
    ex = {"id": "1", "text": "great fun", "label": "positive"}
    plain = task.teacher_messages(ex)[-1]["content"]
    shown = task.teacher_messages(ex, " negative")[-1]["content"]
    assert "great fun" in plain and '"positive"' in plain and "answered" not in plain
    assert "wrongly with: negative" in shown


def test_math_task_scores_numerically_and_parses_teacher_output():
    task = make_task(TaskConfig(type="math"))
    assert isinstance(task, MathTask)
    ex = {"question": "2+2?", "answer": "2 plus 2 is 4\n#### 4"}
    assert task.student_prompt(ex) == "Question: 2+2?\nAnswer:"
    assert task.score(task.extract(" 2 and 2 make 4.0\n#### 4.0"), ex)
    assert not task.score(task.extract("#### 5"), ex)
    assert not task.score(task.extract("I don't know"), ex)
    out = task.parse("Question: Tom has 3 apples and buys 2. How many?\nAnswer: 3 + 2 = 5\n#### 5", ex)
    assert out == [{"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = 5\n#### 5"}]
    out = task.parse("question: A costs 1,200 and B 300. Total?\nsolution: 1,200 + 300 = 1,500", ex)
    assert out[0]["answer"].endswith("#### 1500")
    assert task.parse("Question: what?\nAnswer: no idea", ex)[0].reason == "the answer has no final number"
    assert task.parse("Just chatting", ex) == [Reject("no JSON and no 'Question:'/'Answer:' pair")]
    assert "no final number" in task.check({"question": "q", "answer": "none"})


def test_choice_task():
    task = make_task(TaskConfig(type="choice", description="pick the holding"))
    assert isinstance(task, ChoiceTask)
    ex = {"id": "c", "context": "The court held <HOLDING>.", "endings": ["a", "b", "c"], "label": 2}
    assert task.student_prompt(ex) == "pick the holding\nThe court held <HOLDING>.\n0: a\n1: b\n2: c\nAnswer:"
    assert task.candidates(ex) == [" 0", " 1", " 2"]
    assert task.score(task.extract(" 2"), ex) and not task.score(task.extract(" 1"), ex)
    assert task.check(ex) is None
    assert "option index" in task.check({**ex, "label": 3})
    assert "option index" in task.check({**ex, "label": True})
    assert "list of at least 2" in task.check({**ex, "endings": "abc"})
    good = "Context: A new case.\n0: x\n1: y\n2: z\nAnswer: 1"
    assert task.parse(good, ex) == [{"context": "A new case.", "endings": ["x", "y", "z"], "label": 1}]
    assert task.parse("Context: A new case.\n0: x\n1: y\nAnswer: 1", ex)[0].reason == "expected 3 options, got 2"
    assert task.parse("Context: A new case.\n0: x\n1: y\n2: z\nAnswer: 7", ex)[0].reason == (
        "field 'label' must be an option index from 0 to 2")


def test_choice_answer_at_the_parents_position():
    parent = {"id": "p", "context": "The court held <HOLDING>.", "endings": ["a", "b", "c"], "label": 2}
    reply = '{"examples": [{"context": "A new case.", "endings": ["right", "x", "y"], "label": 0}]}'
    as_written = make_task(TaskConfig(type="choice"))
    assert as_written.parse(reply, parent) == [{"context": "A new case.", "endings": ["right", "x", "y"], "label": 0}]
    moved = make_task(TaskConfig(type="choice", answer_position="parent"))
    assert moved.parse(reply, parent) == [{"context": "A new case.", "endings": ["y", "x", "right"], "label": 2}]
    # already there: unchanged; a reply the checks reject stays rejected (its label is not moved into range)
    assert moved.parse(reply.replace('"label": 0', '"label": 2'), parent)[0]["endings"] == ["right", "x", "y"]
    assert moved.parse(reply.replace('"label": 0', '"label": 5'), parent)[0].reason == (
        "field 'label' must be an option index from 0 to 2")
    with pytest.raises(ValueError, match="'answer_position' is for choice tasks"):
        TaskConfig(type="classification", answer_position="parent")
    custom = TaskConfig(type="custom", checker="choice", prompt_template="{context}", answer_position="parent")
    assert make_task(custom).parse(reply, parent)[0]["label"] == 2


def test_custom_exact_task():
    cfg = TaskConfig(type="custom", checker="exact", input_field="word", output_field="plural",
                     prompt_template="Plural of {word}:", description="plurals")
    task = make_task(cfg)
    assert isinstance(task, ExactTask)
    ex = {"word": "mouse", "plural": "mice"}
    assert task.student_prompt(ex) == "Plural of mouse:"
    assert task.score(task.extract(" Mice\nextra"), ex)
    assert task.parse("Input: goose\nOutput: geese", ex) == [{"word": "goose", "plural": "geese"}]
    assert task.parse("nothing", ex) == [Reject("no JSON and no 'Input:'/'Output:' pair")]


def test_custom_task_needs_checker_and_template():
    with pytest.raises(ValueError, match="checker"):
        TaskConfig(type="custom", prompt_template="x")
    with pytest.raises(ValueError, match="prompt_template"):
        TaskConfig(type="custom", checker="exact")


def test_length_batches_group_similar_lengths_and_reshuffle_per_epoch():
    from llm2llm.student import length_batches

    lengths = [5, 50, 7, 48, 6, 52, 9, 47, 30, 31, 29, 32]
    first = length_batches(lengths, 4, seed=0, epoch=0)
    assert sorted(first) == list(range(12))  # every example once
    batches = [[lengths[i] for i in first[k:k + 4]] for k in range(0, 12, 4)]
    waste = sum(4 * max(b) - sum(b) for b in batches) / sum(4 * max(b) for b in batches)
    assert waste < 0.1, batches  # random batches of these lengths waste about half
    assert length_batches(lengths, 4, seed=0, epoch=0) == first  # deterministic
    assert {tuple(length_batches(lengths, 4, seed=0, epoch=e)) for e in range(6)} != {tuple(first)}
    # a short last batch must not shift the others' boundaries: every full batch stays sorted together
    more = lengths + [100, 101]
    for epoch in range(5):
        order = length_batches(more, 4, seed=1, epoch=epoch)
        chunks = [sorted(more[i] for i in order[k:k + 4]) for k in range(0, len(order), 4)]
        assert chunks[-1] == [100, 101] and max(max(c) - min(c) for c in chunks[:-1]) <= 5, chunks


def test_cut_sorted_is_the_cheapest_cut_and_gives_a_long_tail_its_own_batches():
    import itertools
    import random

    from llm2llm.student import cut_sorted

    def cost(lengths, runs, overhead):
        return sum(overhead + (b - a) * lengths[b - 1] for a, b in runs)

    rng = random.Random(0)
    for _ in range(200):  # against every way of cutting, on small inputs
        lengths = sorted(rng.randint(1, 60) for _ in range(rng.randint(1, 8)))
        max_rows, overhead = rng.randint(1, 4), rng.choice([0, 5, 64])
        runs = cut_sorted(lengths, max_rows, overhead)
        assert [i for a, b in runs for i in range(a, b)] == list(range(len(lengths)))  # each once, in order
        assert all(b - a <= max_rows for a, b in runs)
        every = []
        for cuts in itertools.product([0, 1], repeat=len(lengths) - 1):
            bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [len(lengths)]
            cand = list(zip(bounds, bounds[1:]))
            if all(b - a <= max_rows for a, b in cand):
                every.append(cost(lengths, cand, overhead))
        assert cost(lengths, runs, overhead) == min(every)
    # 30 short prompts and 2 long ones: the long ones do not pad a batch of short ones
    lengths = [10] * 30 + [50, 57]
    assert cut_sorted(lengths, 32) == [(0, 30), (30, 32)]
    assert cut_sorted([10] * 64, 32) == [(0, 32), (32, 64)]


def test_scoring_no_prompts_needs_no_model():
    from types import SimpleNamespace

    from llm2llm.student import candidate_logprobs, score_candidates

    tokenizer = SimpleNamespace(eos_token="</s>")
    assert candidate_logprobs(None, tokenizer, [], [], 4) == [] and score_candidates(None, tokenizer, [], [], 4) == []


@pytest.mark.parametrize("text,bad", [
    ("I'm sorry, but I can't help with that.", True),
    ("Sure! here it is", True),
    ("As an AI language model I think it is positive", True),
    ("a movie that i am sorry i missed", False),
    ("...", True),
    ("<new review>", True),
    ("[your text here]", True),
    ("turn the heating down to 19 degrees", False),
])
def test_not_an_example(text, bad):
    assert not_an_example(text) == bad


def test_json_items_reads_objects_lists_and_cut_off_replies():
    assert json_items('noise {"examples": [{"text": "a"}, {"text": "b"}]} trailing') == [{"text": "a"}, {"text": "b"}]
    assert json_items('[{"text": "a"}]') == [{"text": "a"}]
    assert json_items('{"text": "a"}') == [{"text": "a"}]
    assert json_items('{"examples": [{"text": "a"}, {"text": "b c') == [{"text": "a"}, {"text": "b c"}]
    assert json_items("no json here") is None


def test_teacher_messages_show_shots_ask_for_n_and_the_schema_matches_the_fields():
    task = cls_task()
    ex = {"id": "1", "text": "great fun", "label": "positive"}
    shots = [{"id": "2", "text": "loved it", "label": "positive"}, {"id": "3", "text": "a joy", "label": "positive"}]
    content = task.teacher_messages(ex, None, shots, 3)[-1]["content"]
    assert '{"examples": [{"text": "loved it"}, {"text": "a joy"}, {"text": "great fun"}]}' in content
    assert "Write 3 new examples" in content and "same JSON format" in content
    schema = task.reply_schema(ex, 3)
    item = schema["properties"]["examples"]["items"]
    assert schema["properties"]["examples"]["maxItems"] == 3 and item["required"] == ["text"]
    math = make_task(TaskConfig(type="math"))
    assert list(math.reply_schema({"question": "q", "answer": "a"}, 2)["properties"]["examples"]["items"][
        "properties"]) == ["question", "answer"]


def test_json_replies_for_each_task_type():
    task = make_task(TaskConfig(type="math"))
    ex = {"question": "2+2?", "answer": "#### 4"}
    out = task.parse('{"examples": [{"question": "Ann has 4 pens and 3 more. How many?", "answer": "4+3=7 #### 7"},'
                     '{"question": "Bob has two cats. How many?", "answer": "no idea"}]}', ex)
    assert out[0] == {"question": "Ann has 4 pens and 3 more. How many?", "answer": "4+3=7\n#### 7"}
    assert out[1].reason == "the answer has no final number"
    choice = make_task(TaskConfig(type="choice"))
    parent = {"context": "old", "endings": ["a", "b"], "label": 0}
    got = choice.parse('{"examples": [{"context": "A new case here.", "endings": ["x", "y"], "label": 1}]}', parent)
    assert got == [{"context": "A new case here.", "endings": ["x", "y"], "label": 1}]


def test_markers_of_the_data_are_format_not_placeholders():
    """CaseHOLD's contexts hold a <HOLDING> slot: a new example keeps it (and is kept), one without it is rejected;
    a marker the data does not use is still a template placeholder."""
    rows = [{"context": f"case {i} held (<HOLDING>) here", "endings": ["a", "b"], "label": 0} for i in range(9)]
    rows.append({"context": "an odd row with <br> in it", "endings": ["a", "b"], "label": 1})
    assert data_markers(rows, "context") == frozenset({"<HOLDING>"})  # <br>: in one row of ten, not format
    assert data_markers(rows[:1] + rows[-1:], "context") == frozenset({"<HOLDING>", "<br>"})  # in half the rows
    choice = make_task(TaskConfig(type="choice"), rows)
    assert choice.markers == frozenset({"<HOLDING>"})
    parent = rows[0]
    reply = '{"examples": [{"context": "%s", "endings": ["x", "y"], "label": 1}]}'
    assert choice.parse(reply % "A new case (<HOLDING>) of its own.", parent) == [
        {"context": "A new case (<HOLDING>) of its own.", "endings": ["x", "y"], "label": 1}]
    assert choice.parse(reply % "A new case without the slot.", parent)[0].reason == (
        "no <HOLDING> in 'context', which its parent has")
    assert choice.parse(reply % "A case with (<your holding>) to fill.", parent)[0].reason == NOT_AN_EXAMPLE
    context = choice.reply_schema(parent, 1)["properties"]["examples"]["items"]["properties"]["context"]
    assert re.fullmatch(context["pattern"], "A new case (<HOLDING>) of its own.")
    assert not re.fullmatch(context["pattern"], "A new case without the slot.")
    assert not re.fullmatch(context["pattern"], 'A "quoted" case (<HOLDING>).')  # raw JSON text = decoded text
    assert "must contain <HOLDING>" in choice.teacher_messages(parent)[1]["content"]
    plain = make_task(TaskConfig(type="choice"), [{**parent, "context": "no slot"}] * 3 + rows[:2])  # 2 of 5 rows
    assert plain.markers == frozenset() and "must contain" not in plain.teacher_messages(parent)[1]["content"]
    assert not_an_example("held (<HOLDING>) here", frozenset({"<HOLDING>"})) is False
    assert not_an_example("held (<HOLDING>) here") is True


def test_judge_verdicts():
    task = cls_task()
    ex = {"text": "great fun", "label": "positive"}
    assert task.judge_verdict('{"label": "positive"}', ex) is None
    assert task.judge_verdict('{"label": "negative"}', ex) == "judge: the teacher labels it 'negative'"
    assert task.judge_verdict("I think it is positive.", ex) is None
    assert task.judge_schema(ex)["properties"]["label"]["enum"] == ["negative", "positive"]
    math = make_task(TaskConfig(type="math"))
    q = {"question": "2+2?", "answer": "2+2=4\n#### 4"}
    assert math.judge_schema(q) is None and "#### <number>" in math.judge_messages(q)[-1]["content"]
    assert math.judge_verdict("2 + 2 = 4\n#### 4", q) is None
    assert math.judge_verdict("2 + 2 = 5, then 5 - 1 = 4\n#### 5", q) == "judge: the teacher re-solves it to 5, not 4"
    assert math.judge_verdict("2 + 2 = 4, so the answer is 4.", q) is None  # no '####': the last number
    assert math.judge_verdict("no idea", q) == "judge: the teacher re-solves it to None, not 4"
    choice = make_task(TaskConfig(type="choice"))
    c = {"context": "c", "endings": ["a", "b"], "label": 1}
    assert choice.judge_verdict('{"answer": 1}', c) is None and choice.judge_verdict('{"answer": 0}', c)
    assert make_task(TaskConfig(type="custom", checker="exact", prompt_template="{input}")).judge_messages(q) is None
