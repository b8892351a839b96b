import pytest

from frugal_lm.errors import FrugalError
from frugal_lm.evals.datasets import AnswerItem, ChoiceItem, find_files, load_items

from .conftest import HELLASWAG


def test_hugging_face_layouts(benchmark_dir):
    gsm8k = load_items("gsm8k", benchmark_dir)
    assert [item.answers for item in gsm8k] == [(("7",),), (("1234",),), (("-3",),)]
    assert gsm8k[1].question.startswith("A car costs") and gsm8k[1].demonstration.endswith("#### 1,234")
    assert gsm8k[0].where.endswith("test-00000-of-00001.parquet:row 1")

    math = load_items("math", benchmark_dir)
    assert [item.answers[0][0] for item in math] == ["\\frac{3}{4}", "2"]

    drop = load_items("drop", benchmark_dir)
    assert drop[0].answers == (("Bears",),) and drop[1].answers == (("Bears", "Cowboys"),)
    assert drop[1].question == "The Bears beat the Cowboys 24 to 10 in Chicago.\nQuestion: Which teams played?"

    mmlu = load_items("mmlu", benchmark_dir)
    assert mmlu[0] == ChoiceItem(mmlu[0].where, "What is 2 + 2?", ("3", "4", "5", "22"), 1, "elementary_mathematics")
    assert [item.subject for item in load_items("mmlu", benchmark_dir, "fewshot")] == [
        "astronomy",
        "elementary_mathematics",
    ]

    arc = load_items("arc_challenge", benchmark_dir)
    assert (arc[0].options, arc[0].label) == (("oxygen", "carbon dioxide", "helium"), 1)
    assert (arc[1].label, arc[1].options[arc[1].label]) == (0, "heat")  # numeric labels "1".."4"

    easy = load_items("arc_easy", benchmark_dir)  # the original release, question.stem / question.choices
    assert (easy[0].context, easy[0].options, easy[0].label) == ("What do bees make?", ("honey", "milk"), 0)

    hellaswag = load_items("hellaswag", benchmark_dir)[0]
    assert hellaswag.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert "[title]" not in hellaswag.options[1]
    reference = pytest.importorskip("lm_eval.tasks.hellaswag.utils")  # the same clean-up as lm-eval
    assert hellaswag.options == tuple(reference.preprocess(e) for e in HELLASWAG[0]["endings"])
    assert hellaswag.label == 3

    winogrande = load_items("winogrande", benchmark_dir)
    assert [(w.options, w.label) for w in winogrande] == [(("trophy", "suitcase"), 0), (("trophy", "suitcase"), 1)]

    boolq = load_items("boolq", benchmark_dir)
    assert [b.label for b in boolq] == [1, 0] and boolq[0].options == ("no", "yes")
    assert boolq[0].context == "The sky is blue on a clear day.\nQuestion: is the sky blue?"


def test_original_layouts(original_benchmark_dir):
    root = original_benchmark_dir
    assert [i.answers for i in load_items("gsm8k", root)] == [(("7",),), (("1234",),), (("-3",),)]
    math = load_items("math", root)  # one JSON file per problem; gold read from \boxed{}
    assert sorted(i.answers[0][0] for i in math) == ["2", "\\frac{3}{4}"]
    drop = load_items("drop", root)  # answer + validated answers, deduplicated
    assert drop[0].answers == (("24",), ("24 points",)) and "How many points" in drop[0].question
    mmlu = load_items("mmlu", root)  # headerless CSV, subject from the file name
    assert mmlu[0] == ChoiceItem(
        mmlu[0].where, 'Which planet is red, "the red planet"?', ("Venus", "Mars", "Earth", "Moon"), 1, "astronomy"
    )
    assert load_items("hellaswag", root)[0].label == 3
    assert [w.label for w in load_items("winogrande", root)] == [0, 1]
    assert [b.label for b in load_items("boolq", root)] == [1, 0]


def test_limit(benchmark_dir):
    assert len(load_items("gsm8k", benchmark_dir, limit=2)) == 2
    assert isinstance(load_items("gsm8k", benchmark_dir, limit=1)[0], AnswerItem)


def test_missing_file_names_folder_patterns_and_publisher(tmp_path, benchmark_dir):
    with pytest.raises(
        FrugalError,
        match=r"gsm8k: no test file in .*gsm8k \(looked for main/test-\*\.parquet or "
        r"test\.jsonl; published as Hugging Face dataset openai/gsm8k",
    ):
        load_items("gsm8k", tmp_path)
    with pytest.raises(FrugalError, match=r"boolq: no few-shot \(train/dev\) file .*google/boolq"):
        find_files("boolq", benchmark_dir, "fewshot")


def test_malformed_rows_name_file_and_row(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k/test.jsonl").write_text('{"question": "q", "answer": "42"}\n')
    with pytest.raises(FrugalError, match=r"test.jsonl:1: field 'answer' has no '#### <number>'"):
        load_items("gsm8k", tmp_path)
    (tmp_path / "arc/ARC-Easy").mkdir(parents=True)
    (tmp_path / "arc/ARC-Easy/ARC-Easy-Test.jsonl").write_text(
        '{"question": {"stem": "s", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "E"}\n'
    )
    with pytest.raises(FrugalError, match=r"ARC-Easy-Test.jsonl:1: answerKey 'E' is not one of the labels"):
        load_items("arc_easy", tmp_path)
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande/dev.jsonl").write_text('{"sentence": "s _", "option1": "a", "answer": "1"}\n')
    with pytest.raises(FrugalError, match=r"dev.jsonl:1: missing field 'option2'"):
        load_items("winogrande", tmp_path)
