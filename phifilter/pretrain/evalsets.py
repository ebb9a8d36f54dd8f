"""HumanEval and MBPP as problems: the text whose loss is measured, and a test program.

Read from ``--eval-dir`` or, by default, the copies shipped in ``eval_data/`` (see its README
for sources and licences). Nothing here imports torch.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

HUMANEVAL_FILE = "HumanEval.jsonl.gz"
MBPP_FILE = "mbpp.jsonl"
MBPP_TEST_IDS = range(11, 511)  # the standard MBPP test split (Austin et al. 2021)

# A completion ends where a new top-level statement starts (the Codex paper's stop list).
HUMANEVAL_STOPS = ("\nclass ", "\ndef ", "\n#", "\nif ", "\nprint(")
MBPP_STOPS = ("\nclass ", "\nif ", "\nprint(", "\n#", "\nassert ", '\n"""')


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    solution: str  # the reference completion of the prompt
    test: str  # code that raises if the function defined by prompt + completion is wrong
    stops: tuple[str, ...]

    @property
    def reference(self) -> str:
        """Prompt + canonical solution: the text whose per-token loss is reported."""
        return self.prompt + self.solution

    def program(self, completion: str) -> str:
        return f"{self.prompt}{completion}\n\n{self.test}\n"


def default_eval_dir() -> Path:
    return Path(__file__).resolve().parent / "eval_data"


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path}: no such file; --eval-dir must hold {HUMANEVAL_FILE} and {MBPP_FILE}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON-lines file ({e})") from None


def _unix(text: str) -> str:
    return text.replace("\r\n", "\n")


def load_humaneval(eval_dir: str | Path | None = None) -> list[Problem]:
    path = Path(eval_dir or default_eval_dir()) / HUMANEVAL_FILE
    problems = []
    for row in _jsonl(path):
        try:
            problems.append(Problem(
                task_id=row["task_id"], prompt=row["prompt"], solution=row["canonical_solution"],
                test=f"{row['test']}\n\ncheck({row['entry_point']})", stops=HUMANEVAL_STOPS,
            ))
        except KeyError as e:
            raise InputError(f"{path}: a row lacks the field {e}; is this HumanEval?") from None
    return problems


def _mbpp_rows(eval_dir: str | Path | None) -> tuple[Path, list[dict]]:
    path = Path(eval_dir or default_eval_dir()) / MBPP_FILE
    return path, _jsonl(path)


def mbpp_problem(row: dict) -> Problem:
    tests = row["test_list"]
    prompt = f'"""\n{row["text"]}\n{tests[0] if tests else ""}\n"""\n'
    test = "\n".join([_unix(row.get("test_setup_code") or ""), *tests])
    return Problem(task_id=f"MBPP/{row['task_id']}", prompt=prompt, solution=_unix(row["code"]),
                   test=test, stops=MBPP_STOPS)


def load_mbpp(eval_dir: str | Path | None = None, split: str = "test") -> list[Problem]:
    """The test split (task ids 11-510) or, with split="all", every problem."""
    path, rows = _mbpp_rows(eval_dir)
    try:
        return [mbpp_problem(r) for r in rows if split == "all" or r["task_id"] in MBPP_TEST_IDS]
    except KeyError as e:
        raise InputError(f"{path}: a row lacks the field {e}; is this MBPP?") from None


def contamination_texts(eval_dir: str | Path | None = None) -> list[str]:
    """Everything of both benchmarks a training document must not contain: prompts, reference
    solutions and tests of all 164 HumanEval and all 974 MBPP problems (not only the test split,
    because any MBPP problem in training data would flatter the model on the rest)."""
    texts = []
    for p in load_humaneval(eval_dir) + load_mbpp(eval_dir, split="all"):
        texts += [p.reference, p.solution, p.test]
    path, rows = _mbpp_rows(eval_dir)
    texts += [r.get("text", "") for r in rows]
    return [t for t in texts if t.strip()]
