"""The one decontamination rule (phifilter/exclude.py), used by `sample --exclude` and `ablate`:
exact match of the lower-cased words, or a shared informative 13-word run. Known answers on the
real HumanEval and MBPP copies the package ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from phifilter.errors import InputError
from phifilter.exclude import ExclusionSet, load_exclusions, min_distinct, min_informative
from phifilter.pretrain.evalsets import HUMANEVAL_FILE, MBPP_FILE, contamination_texts, default_eval_dir, load_humaneval

EVAL = default_eval_dir()
ROLLING_MAX = '''def rolling_maximum(numbers):
    """From a given list of integers, generate a list of rolling maximum element found until
    given moment in the sequence."""
    running_max = None
    result = []
    for n in numbers:
        if running_max is None:
            running_max = n
        else:
            running_max = max(running_max, n)
        result.append(running_max)
    return result
'''


@pytest.fixture(scope="module")
def humaneval_file_set():
    """What `sample --exclude HumanEval.jsonl.gz --exclude mbpp.jsonl` builds."""
    return load_exclusions([EVAL / HUMANEVAL_FILE, EVAL / MBPP_FILE])


@pytest.fixture(scope="module")
def ablate_set():
    """What `ablate` builds from the same two benchmarks."""
    return ExclusionSet.from_texts(contamination_texts(EVAL))


def test_a_document_that_is_exactly_a_humaneval_prompt(humaneval_file_set, ablate_set):
    prompt = load_humaneval(EVAL)[0].prompt
    assert humaneval_file_set.check(prompt) == "exact"
    # Case, indentation and line endings do not hide it.
    assert humaneval_file_set.check(prompt.upper().replace("    ", "\t").replace("\n", "\r\n")) == "exact"
    # ablate's set holds prompt + solution, not the bare prompt: the prompt's 13-word runs catch it.
    assert ablate_set.check(prompt) == "ngram"
    assert ablate_set.check(load_humaneval(EVAL)[0].reference) == "exact"


def test_a_document_sharing_a_13_word_run_and_one_sharing_12(humaneval_file_set, ablate_set):
    # HumanEval/0's docstring: "Check if in given list of numbers, are any two numbers closer to each other than"
    run = "check if in given list of numbers are any two numbers closer to".split()
    assert len(run) == 13 and min_informative(13) == 7 and min_distinct(13) == 5
    for ex in (humaneval_file_set, ablate_set):
        assert ex.check(f"import os\n\n# NOTE: {' '.join(run).upper()}!\nprint(os.sep)\n") == "ngram"
        assert ex.check(f"import os\n\n# NOTE: {' '.join(run[:12]).upper()}!\nprint(os.sep)\n") is None


def test_a_document_sharing_nothing(humaneval_file_set, ablate_set):
    clean = Path(__file__).read_text().split('"""')[1]  # this file's docstring: ordinary prose about code
    for ex in (humaneval_file_set, ablate_set):
        assert ex.check(clean) is None and not ex.matches(clean)
        assert ex.check("def unrelated(a, b):\n    return a * b + 7\n") is None


def test_known_13_gram_overlap_is_removed_and_12_words_are_not():
    ex = ExclusionSet.from_texts([ROLLING_MAX])
    words = "from a given list of integers generate a list of rolling maximum element found until".split()
    thirteen, twelve = " ".join(words[:13]), " ".join(words[:12])
    # Embedded in unrelated code, with different case and punctuation: still found.
    assert ex.check(f"import os\n\nx = 1  # {thirteen.upper()}!\nprint(x)\n") == "ngram"
    assert ex.check(f"import os\n\nx = 1  # {twelve}\nprint(x)\n") is None


def test_exact_copy_is_found_whatever_the_whitespace_case_and_punctuation():
    ex = ExclusionSet.from_texts(["def f(a):\n    return a*2\n"])  # shorter than 13 words: exact match only
    assert ex.check("def  f(a):\n\n\treturn a*2") == "exact"
    assert ex.check("DEF F(A): RETURN A * 2;") == "exact"
    assert ex.check("def f(a):\n    return a*3\n") is None
    assert ex.check("x = 1\ndef f(a):\n    return a*2\n") is None  # short texts must be the whole document


def test_runs_of_numbers_letters_or_loop_indices_do_not_count():
    evaluation = ("primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43]\nletters = 'a b c d e f g h i j k l m n'\n"
                  "for i in range(1, n + 1):\n    for j in range(1, m + 1):\n        dp[i][j] = 0\n")
    ex = ExclusionSet.from_texts([evaluation])
    assert ex.check("SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43)") is None
    assert ex.check("alphabet = ['a','b','c','d','e','f','g','h','i','j','k','l','m','n']") is None
    assert ex.check("for i in range(1, n + 1):\n    for j in range(1, m + 1):\n        t[i][j] = 1\n") is None


def test_another_run_length_keeps_the_same_shares():
    assert (min_informative(8), min_distinct(8)) == (5, 4)
    ex = ExclusionSet.from_texts([ROLLING_MAX], ngram=8)
    assert ex.check("# generate a list of rolling maximum element found until\n") == "ngram"
    assert ex.check("# a list of rolling maximum element found\n") is None  # 7 words


def test_real_humaneval_solution_inside_a_bigger_file_is_caught(ablate_set):
    problem = load_humaneval(EVAL)[12]
    doc = "# helpers\nimport sys\n\n" + problem.prompt + problem.solution + "\nif __name__ == '__main__':\n    main()\n"
    assert ablate_set.check(doc) == "ngram"


def test_texts_added_later_are_found():
    ex = ExclusionSet()
    assert not ex.matches("def f(a):\n    return a*2\n") and len(ex) == 0
    assert ex.add("def f(a):\n    return a*2\n") and not ex.add("  \n")
    assert ex.check("def f(a): return a*2") == "exact" and len(ex) == 1
    ex.add(ROLLING_MAX)
    assert ex.check("rolling maximum element found until given moment in the sequence running_max none result for n") == "ngram"


def test_a_file_with_no_text_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text('{"task_id": 1, "ok": true}\n')
    with pytest.raises(InputError, match="empty.jsonl: holds no text to exclude"):
        load_exclusions([tmp_path / "empty.jsonl"])
