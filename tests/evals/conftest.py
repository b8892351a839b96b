"""Benchmark fixtures: a few rows of each public data set, written in its published layout."""

import json

import pytest


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


GSM8K = [
    {
        "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7",
    },
    {
        "question": "A car costs $1,200 and a bike $34. What do both cost?",
        "answer": "1200 + 34 = <<1200+34=1234>>1234\n#### 1,234",
    },
    {"question": "It is 5 degrees and drops 8 degrees. What is the temperature?", "answer": "5 - 8 = -3\n#### -3"},
]
MATH500 = [
    {
        "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
        "solution": "We get $\\boxed{\\frac{3}{4}}$.",
        "answer": "\\frac{3}{4}",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
    {
        "problem": "Solve $x^2 = 4$ for $x > 0$.",
        "solution": "So $x = \\boxed{2}$.",
        "answer": "2",
        "subject": "Algebra",
        "level": 1,
        "unique_id": "test/algebra/2.json",
    },
]
DROP_HF = [
    {
        "section_id": "nfl_1",
        "query_id": "q1",
        "passage": "The Bears beat the Cowboys 24 to 10 in Chicago.",
        "question": "Who won?",
        "answers_spans": {"spans": ["Bears"], "types": ["span"]},
    },
    {
        "section_id": "nfl_1",
        "query_id": "q2",
        "passage": "The Bears beat the Cowboys 24 to 10 in Chicago.",
        "question": "Which teams played?",
        "answers_spans": {"spans": ["Bears", "Cowboys"], "types": ["span", "span"]},
    },
]
MMLU = [
    {"question": "What is 2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"], "answer": 1},
    {
        "question": "Which planet is red?",
        "subject": "astronomy",
        "choices": ["Venus", "Mars", "Earth", "Moon"],
        "answer": 1,
    },
]
MMLU_DEV = [
    {"question": "What is 1 + 1?", "subject": "astronomy", "choices": ["1", "2", "3", "4"], "answer": 1},
    {"question": "What is 3 + 3?", "subject": "elementary_mathematics", "choices": ["6", "7", "8", "9"], "answer": 0},
]
ARC_HF = [
    {
        "id": "Mercury_1",
        "question": "Which gas do plants take in?",
        "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]},
        "answerKey": "B",
    },
    {
        "id": "Mercury_2",
        "question": "What melts ice?",
        "choices": {"text": ["heat", "cold", "dark", "wind"], "label": ["1", "2", "3", "4"]},
        "answerKey": "1",
    },
]
ARC_ORIGINAL = [
    {
        "id": "E_1",
        "question": {
            "stem": "What do bees make?",
            "choices": [{"text": "honey", "label": "A"}, {"text": "milk", "label": "B"}],
        },
        "answerKey": "A",
    },
]
HELLASWAG = [
    {
        "ind": 24,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "starts pulling up roofing on a roof. [title]",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
        ],
        "source_id": "activitynet~v_-JhWjGDPHMY",
        "split": "val",
        "split_type": "indomain",
        "label": "3",
    },
]
WINOGRANDE = [
    {
        "qID": "3QHITW7",
        "sentence": "The trophy does not fit in the suitcase because the _ is too big.",
        "option1": "trophy",
        "option2": "suitcase",
        "answer": "1",
    },
    {
        "qID": "3QHITW8",
        "sentence": "The trophy does not fit in the suitcase because the _ is too small.",
        "option1": "trophy",
        "option2": "suitcase",
        "answer": "2",
    },
]
BOOLQ = [
    {"question": "is the sky blue", "title": "Sky", "answer": True, "passage": "The sky is blue on a clear day."},
    {"question": "do fish fly", "title": "Fish", "answer": False, "passage": "Fish swim in water."},
]


def write_benchmarks(root):
    """Every data set in its Hugging Face layout (gsm8k also with its train split for shots)."""
    _parquet(root / "gsm8k/main/test-00000-of-00001.parquet", GSM8K)
    _parquet(root / "gsm8k/main/train-00000-of-00001.parquet", GSM8K[:1])
    _jsonl(root / "math/test.jsonl", MATH500)
    _parquet(root / "drop/data/validation-00000-of-00001.parquet", DROP_HF)
    _parquet(root / "mmlu/all/test-00000-of-00001.parquet", MMLU)
    _parquet(root / "mmlu/all/dev-00000-of-00001.parquet", MMLU_DEV)
    _parquet(root / "arc/ARC-Challenge/test-00000-of-00001.parquet", ARC_HF)
    _jsonl(root / "arc/ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl", ARC_ORIGINAL)
    _jsonl(root / "hellaswag/hellaswag_val.jsonl", HELLASWAG)
    _jsonl(root / "winogrande/dev.jsonl", WINOGRANDE)
    _parquet(root / "boolq/data/validation-00000-of-00001.parquet", BOOLQ)
    return root


def write_original_layouts(root):
    """The original (non-Hugging Face) releases where they differ."""
    _jsonl(root / "gsm8k/grade_school_math/data/test.jsonl", GSM8K)
    for number, row in enumerate(MATH500, 1):
        path = root / f"math/MATH/test/algebra/{number}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"problem": row["problem"], "level": "Level 1", "type": "Algebra", "solution": row["solution"]})
        )
    (root / "drop/drop_dataset").mkdir(parents=True)
    (root / "drop/drop_dataset/drop_dataset_dev.json").write_text(
        json.dumps(
            {
                "nfl_1": {
                    "passage": "The Bears beat the Cowboys 24 to 10 in Chicago.",
                    "qa_pairs": [
                        {
                            "question": "How many points did the Bears score?",
                            "query_id": "q3",
                            "answer": {"number": "24", "date": {"day": "", "month": "", "year": ""}, "spans": []},
                            "validated_answers": [
                                {"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": ["24 points"]}
                            ],
                        }
                    ],
                }
            }
        )
    )
    csv_path = root / "mmlu/data/test/astronomy_test.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text('"Which planet is red, ""the red planet""?",Venus,Mars,Earth,Moon,B\n')
    hellaswag = dict(HELLASWAG[0], label=3)
    _jsonl(root / "hellaswag/data/hellaswag_val.jsonl", [hellaswag])
    _parquet(root / "winogrande/winogrande_xl/validation-00000-of-00001.parquet", WINOGRANDE)
    _jsonl(root / "boolq/dev.jsonl", BOOLQ)
    return root


@pytest.fixture
def benchmark_dir(tmp_path):
    return write_benchmarks(tmp_path / "benchmarks")


@pytest.fixture
def original_benchmark_dir(tmp_path):
    return write_original_layouts(tmp_path / "original")
