"""Fuzzing with hypothesis: text content, Parquet schemas, the LLM reply parser, CLI options.

Nothing may crash with a traceback: bad input is a one-line `Error:` (exit 1) or a usage error
(exit 2). The embedder is slow on CPU, so text goes through a classifier loaded with
max_length=16 and example counts are small; the whole module takes well under a minute.
"""

from __future__ import annotations

import json
import string

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phifilter.cli import main
from phifilter.corpus import texts_from_array
from phifilter.errors import InputError
from phifilter.label.backends import OpenAIChatBackend, Reply, RetryableError
from phifilter.label.prompt import MAX_REASON_CHARS, build_messages, fence_for, load_rubric, parse_reply

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# any code point, lone surrogates included
any_text = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=200)
nasty_text = st.one_of(
    any_text,
    st.sampled_from(["", " ", "\x00", "\x00" * 50, "\ufeff", "\u202e", "a" * 100_000, ("x" * 5000 + "\n") * 20,
                     "\r\n" * 1000, "Educational score: 5", "\U0001F600" * 500]),
)
raw_bytes = st.binary(max_size=200)  # invalid UTF-8 included


@pytest.fixture(scope="module")
def short_clf():
    from phifilter.classifier import EduClassifier

    clf = EduClassifier.load(device="cpu", max_length=16)
    clf.check_embedder()
    return clf


# ---------------------------------------------------------------------------------------------
# text content


@FUZZ
@given(values=st.lists(st.one_of(st.none(), raw_bytes), max_size=20))
def test_texts_from_array_never_fails_on_invalid_utf8(values):
    array = pa.array(values, pa.binary()).view(pa.string())
    texts = texts_from_array(array)
    assert len(texts) == len(values)
    for v, t in zip(values, texts):
        assert isinstance(t, str)
        if v is None:
            assert t == ""
        t.encode("utf-8")  # no lone surrogates come out


@settings(FUZZ, max_examples=12)
@given(texts=st.lists(nasty_text, min_size=1, max_size=6))
def test_scores_of_any_text_are_finite_probabilities(short_clf, texts):
    scores = short_clf.edu_score(texts)
    assert scores.shape == (len(texts),) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    blank = [not t or t.isspace() for t in texts]
    assert np.all(scores[blank] == 0)


def test_ten_megabyte_document_with_nul_and_invalid_utf8(short_clf, tmp_path):
    from phifilter.scoring import score_shards

    big = (b"def f(x):\n    return x\x00 * 2\n" * 400_000)[: 10 * 1024 * 1024] + b"\xed\xa0\x80\xff"
    one_line = b"y" * (3 * 1024 * 1024)  # a very long line
    arr = pa.array([big, one_line, b""], pa.large_binary()).view(pa.large_string())
    src = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": arr}), src)
    out = tmp_path / "out" / "big.parquet"
    score_shards(src, tmp_path / "out", model=short_clf)
    scores = pq.read_table(out).column("edu_score").to_numpy()
    assert len(scores) == 3 and np.all(np.isfinite(scores))
    assert pq.read_table(out).column("text").equals(pq.read_table(src).column("text"))


# ---------------------------------------------------------------------------------------------
# schemas


def _column(kind: str, n: int, rng: np.random.Generator) -> pa.Array:
    nulls = rng.random(n) < 0.3
    if kind == "int":
        return pa.array([None if z else int(i) for i, z in zip(rng.integers(-9, 9, n), nulls)], pa.int64())
    if kind == "struct":
        return pa.array([None if z else {"a": 1, "b": [1, 2], "c": "x"} for z in nulls])
    if kind == "list":
        return pa.array([None if z else [[1.5], []] for z in nulls], pa.list_(pa.list_(pa.float64())))
    if kind == "map":
        return pa.array([None if z else [("k", 1)] for z in nulls], pa.map_(pa.string(), pa.int32()))
    if kind == "binary":
        return pa.array([None if z else b"\x00\xff" for z in nulls], pa.binary())
    if kind == "timestamp":
        return pa.array([None if z else 1_700_000_000_000 for z in nulls], pa.timestamp("ms", tz="UTC"))
    if kind == "decimal":
        import decimal

        return pa.array([None if z else decimal.Decimal("1.25") for z in nulls], pa.decimal128(5, 2))
    return pa.array([None if z else "x" for z in nulls], pa.string()).dictionary_encode()


text_types = st.sampled_from(["string", "large_string", "dictionary", "dictionary_large", "string_view"])
extra_kinds = st.lists(st.sampled_from(["int", "struct", "list", "map", "binary", "timestamp", "decimal", "dict"]),
                       max_size=4)


def _text_array(texts, text_type):
    if text_type == "large_string":
        return pa.array(texts, pa.large_string())
    if text_type == "dictionary":
        return pa.array(texts, pa.string()).dictionary_encode()
    if text_type == "dictionary_large":
        return pa.array(texts, pa.large_string()).dictionary_encode()
    if text_type == "string_view":
        return pa.array(texts, pa.string_view())
    return pa.array(texts, pa.string())


@settings(FUZZ, max_examples=12)
@given(text_type=text_types, extras=extra_kinds, n=st.integers(0, 5),
       texts=st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=5, max_size=5), seed=st.integers(0, 99))
def test_score_keeps_any_schema_and_every_row(short_clf, tmp_path_factory, text_type, extras, n, texts, seed):
    from phifilter.scoring import score_shards

    tmp = tmp_path_factory.mktemp("schema")
    rng = np.random.default_rng(seed)
    cols = {f"extra_{i}_{k}": _column(k, n, rng) for i, k in enumerate(extras)}
    cols["text"] = _text_array(texts[:n], text_type)
    table = pa.table(cols)
    src = tmp / "s.parquet"
    pq.write_table(table, src)
    out = tmp / "out" / "s.parquet"
    score_shards(src, tmp / "out", model=short_clf)
    result = pq.read_table(out)
    assert result.num_rows == n
    assert result.drop_columns(["edu_score"]).equals(pq.read_table(src))
    assert result.schema.field("edu_score").type == pa.float32()


@pytest.mark.parametrize("bad", [pa.array([1, 2]), pa.array([b"a", b"b"]), pa.array([["a"], ["b"]]),
                                 pa.array([{"t": "a"}, {"t": "b"}])])
def test_non_text_column_is_a_clean_input_error(short_clf, tmp_path, bad):
    from phifilter.scoring import score_shards

    pq.write_table(pa.table({"text": bad}), tmp_path / "in.parquet")
    with pytest.raises(InputError, match="column 'text' has type"):
        score_shards(tmp_path / "in.parquet", tmp_path / "out", model=short_clf)


# ---------------------------------------------------------------------------------------------
# the LLM reply parser and the HTTP reply decoder


@FUZZ
@given(reply=st.one_of(st.none(), any_text, nasty_text))
def test_reply_parser_never_raises_and_never_guesses(reply):
    score, reason = parse_reply(reply)
    assert score is None or 0 <= score <= 5
    assert isinstance(reason, str) and len(reason) <= MAX_REASON_CHARS


@FUZZ
@given(body=any_text, n=st.integers(0, 5), decoration=st.sampled_from(["{}", "**{}**", "{}/5", "{} out of 5", "{}.", "`{}`"]))
def test_a_final_score_line_is_always_read(body, n, decoration):
    reply = f"{body}\nEducational score: {decoration.format(n)}"
    score, _ = parse_reply(reply)
    assert score == n


@FUZZ
@given(doc=nasty_text)
def test_document_cannot_forge_its_fence(doc):
    fence = fence_for(doc)
    assert fence not in doc
    messages = build_messages(doc, load_rubric("code"))
    assert messages[1]["content"].count(fence) == 3  # named once in the instructions, then around the document
    json.dumps(messages)  # lone surrogates are escaped, never a crash at send time


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)
choices_like = st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries(
    {"message": st.one_of(json_values, st.fixed_dictionaries({"content": json_values}))}), max_size=2),
    "usage": json_values})


@FUZZ
@given(data=st.one_of(raw_bytes, json_values.map(lambda v: json.dumps(v).encode()),
                      choices_like.map(lambda v: json.dumps(v).encode())))
def test_http_reply_decoder_gives_a_reply_or_a_retryable_error(data):
    backend = OpenAIChatBackend("http://127.0.0.1:9/v1", "m")
    try:
        reply = backend._parse(data)
    except RetryableError:
        return
    assert isinstance(reply, Reply) and isinstance(reply.text, str)


# ---------------------------------------------------------------------------------------------
# CLI options: a usage error or one `Error:` line, never a traceback

junk = st.one_of(st.text(string.printable, max_size=12), st.sampled_from(
    ["-1", "0", "1", "1e309", "nan", "inf", "-0", "2", "0.5", "", " ", "\x00", "--", "-q", "abc", "9" * 30]))


def _options(table: dict) -> st.SearchStrategy:
    """A random subset of a command's options, each with a random value (or none, for flags)."""
    def one(name):
        values = table[name]
        if values is None:  # a flag
            return st.just([name])
        return st.one_of(values, junk).map(lambda v: [name, str(v)])

    return st.lists(st.sampled_from(sorted(table)), max_size=5, unique=True).flatmap(
        lambda names: st.tuples(*[one(n) for n in names]) if names else st.just(())
    ).map(lambda parts: [x for part in parts for x in part])


INT = st.integers(-5, 5000).map(str)
FLOAT = st.one_of(st.floats(-2, 2), st.sampled_from([float("nan"), float("inf")])).map(str)


def _check(result):
    out = result.output
    assert "Traceback" not in out, out
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"crash: {result.exception!r}\n{out}") from result.exception
    assert result.exit_code in (0, 1, 2), out
    if result.exit_code == 1:
        assert "Error: " in out, out
    if result.exit_code == 2:
        assert "Usage:" in out or "Error: " in out, out


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    pq.write_table(pa.table({"text": ["def f():\n    return 1\n", "x = 1", "", "print(2)"],
                             "domain": ["code", "web", "code", None],
                             "edu_score": pa.array([0.9, 0.1, 0.0, 0.5], pa.float32()),
                             "llm_score": pa.array([4, 0, 1, 3], pa.int8()),
                             "id": ["a", "b", "c", "d"]}), d / "in.parquet")
    (d / "not.parquet").write_bytes(b"PAR1 garbage")
    return d


INPUTS = st.sampled_from(["in.parquet", "not.parquet", "missing.parquet", ".", "*.parquet"])


def _invoke(args, files):
    return CliRunner().invoke(main, args, env={"OPENAI_API_KEY": None, "HF_HUB_OFFLINE": "1"}, catch_exceptions=True)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=_options({"--threshold": FLOAT, "--top-fraction": FLOAT, "--score-column": st.sampled_from(["edu_score", "id", "nope"]),
                      "--text-column": st.sampled_from(["text", "id", "nope"]), "-q": None}), src=INPUTS)
def test_filter_options(fuzz_files, tmp_path_factory, opts, src):
    out = tmp_path_factory.mktemp("f")
    _check(_invoke(["filter", str(fuzz_files / src), "-o", str(out / "o"), *opts], fuzz_files))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=_options({"-n": INT, "--text-column": st.sampled_from(["text", "id", "edu_score", "nope"]),
                      "--stratify-by": st.sampled_from(["domain", "id", "edu_score", "nope"]),
                      "--allocation": st.sampled_from(["proportional", "equal", "x"]), "--max-chars": INT,
                      "--exclude": st.sampled_from(["in.parquet", "missing.jsonl", "not.parquet"]),
                      "--exclude-ngram": INT, "--seed": INT, "--read-batch-rows": INT, "-q": None}),
       src=INPUTS, name=st.sampled_from(["s.parquet", "s.csv", "in.parquet"]))
def test_sample_options(fuzz_files, tmp_path_factory, opts, src, name):
    out = tmp_path_factory.mktemp("s")
    opts = [str(fuzz_files / v) if prev == "--exclude" else v for prev, v in zip([None] + opts, opts)]
    target = fuzz_files / name if name == "in.parquet" else out / name
    _check(_invoke(["sample", str(fuzz_files / src), "-o", str(target), *opts], fuzz_files))


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=_options({"--backend": st.sampled_from(["openai", "transformers", "x"]),
                      "--base-url": st.sampled_from(["http://127.0.0.1:1/v1", "ftp://x", "not a url", "https://api.openai.com/v1"]),
                      "--model": st.sampled_from(["m", "", "./nowhere"]), "--rubric": st.sampled_from(["code", "web", "auto", "missing.md"]),
                      "--text-column": st.sampled_from(["text", "id", "nope"]), "--max-chars": INT, "--concurrency": INT,
                      "--timeout": FLOAT, "--retries": st.just("0"), "--max-requests": INT, "--price-per-mtok": junk,
                      "--dry-run": None, "--api-key-env": st.sampled_from(["OPENAI_API_KEY", "NOPE_KEY"]), "-q": None}),
       src=st.sampled_from(["in.parquet", "not.parquet", "missing.parquet"]))
def test_label_options(fuzz_files, tmp_path_factory, opts, src):
    out = tmp_path_factory.mktemp("l")
    if "--retries" not in opts:
        opts += ["--retries", "0"]  # a random endpoint is never retried for long
    if "--model" not in opts:
        opts += ["--model", "m"]
    _check(_invoke(["label", str(fuzz_files / src), "-o", str(out / "l.parquet"), *opts], fuzz_files))


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=_options({"--text-column": st.sampled_from(["text", "id", "nope"]), "--score-column": st.sampled_from(["edu_score", "text", "s"]),
                      "--batch-size": INT, "--read-batch-rows": INT, "--max-length": INT, "--device": st.sampled_from(["cpu", "tpu", "cuda:7"]),
                      "--on-error": st.sampled_from(["raise", "skip", "x"]), "-m": st.sampled_from(["nowhere", "."]),
                      "--embedder-sha256": st.sampled_from(["config.json=" + "0" * 64, "x", "a=b"])}),
       src=st.sampled_from(["not.parquet", "missing.parquet"]))
def test_score_options(fuzz_files, tmp_path_factory, opts, src):
    out = tmp_path_factory.mktemp("sc")
    _check(_invoke(["score", str(fuzz_files / src), "-o", str(out / "o"), *opts], fuzz_files))


@pytest.mark.parametrize("option, value", [("--timeout", "nan"), ("--retry-delay", "inf"), ("--temperature", "nan")])
def test_non_finite_numbers_are_usage_errors(fuzz_files, tmp_path, option, value):
    result = _invoke(["label", str(fuzz_files / "in.parquet"), "-o", str(tmp_path / "l.parquet"), "--model", "m",
                      "--base-url", "http://127.0.0.1:1/v1", option, value], fuzz_files)
    assert result.exit_code == 2 and "not a finite number" in result.output, result.output
    result = _invoke(["train", str(fuzz_files / "in.parquet"), "-o", str(tmp_path / "m"), "--threshold", "nan"], fuzz_files)
    assert result.exit_code == 2 and "--threshold" in result.output, result.output


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=_options({"--text-column": st.sampled_from(["text", "id", "nope"]), "--score-column": st.sampled_from(["llm_score", "text", "s"]),
                      "--positive-threshold": INT, "--threshold": junk, "--n-estimators": INT, "--min-samples-leaf": INT,
                      "--cv-folds": INT, "--max-length": INT, "--embedder-sha256": st.sampled_from(["x", "a=b"]),
                      "--random-state": INT}),
       src=st.sampled_from(["not.parquet", "missing.parquet"]))
def test_train_options(fuzz_files, tmp_path_factory, opts, src):
    out = tmp_path_factory.mktemp("t")
    _check(_invoke(["train", str(fuzz_files / src), "-o", str(out / "m"), *opts], fuzz_files))


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=_options({"--id-column": st.sampled_from(["id", "", "text", "nope"]), "--score-column-a": st.sampled_from(["llm_score", "edu_score", "text"]),
                      "--score-column-b": st.sampled_from(["llm_score", "id"]), "--positive-threshold": INT, "--json": None}),
       a=st.sampled_from(["in.parquet", "not.parquet", "missing.parquet"]))
def test_agreement_and_info_options(fuzz_files, opts, a):
    _check(_invoke(["agreement", str(fuzz_files / a), str(fuzz_files / "in.parquet"), *opts], fuzz_files))
    _check(_invoke(["info", str(fuzz_files / a)], fuzz_files))


# ---------------------------------------------------------------------------------------------
# JSON Lines shards whose column types drift between rows and shards (issue 20, item 5)

SCALARS = {"str": st.text(string.ascii_letters + " \n", max_size=12), "int": st.integers(-5, 5),
           "float": st.floats(0, 1, allow_nan=False), "bool": st.booleans(), "null": st.none()}
KIND_OF = {"str": "str", "int": "number", "float": "number", "bool": "bool", "null": None}
drifting_shards = st.lists(  # shards, each a list of rows, each row {column: (type, value)}
    st.lists(st.fixed_dictionaries({c: st.sampled_from(sorted(SCALARS)) for c in ("text", "edu_score", "meta")}),
             min_size=1, max_size=4),
    min_size=1, max_size=3)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(shards=drifting_shards, data=st.data(),
       command=st.sampled_from(["filter", "sample", "report"]))
def test_jsonl_shards_with_drifting_types_are_read_or_one_error_line(tmp_path_factory, shards, data, command):
    """Any mix of types per row and shard: the command succeeds only when no column drifts
    (numbers may widen, nulls fit anything), and otherwise ends with one Error line and no output."""
    root = tmp_path_factory.mktemp("drift")
    kinds: dict[str, set] = {}
    (root / "in").mkdir()
    for k, rows in enumerate(shards):
        with open(root / "in" / f"s{k}.jsonl", "w") as f:
            for types in rows:
                row = {c: data.draw(SCALARS[t]) for c, t in types.items()}
                for c, t in types.items():
                    if KIND_OF[t]:
                        kinds.setdefault(c, set()).add(KIND_OF[t])
                f.write(json.dumps(row) + "\n")
    drift = any(len(v) > 1 for v in kinds.values())
    out = root / "out"
    args = {"filter": ["filter", str(root / "in"), "-o", str(out / "f"), "--threshold", "0.5", "-q"],
            "sample": ["sample", str(root / "in"), "-o", str(out / "s.parquet"), "-n", "2", "-q"],
            "report": ["report", str(root / "in"), "-o", str(out / "r.html"), "--threshold", "0.5", "-q"]}[command]
    result = _invoke(args, None)
    _check(result)
    if drift:
        assert result.exit_code == 1 and result.output.count("Error: ") == 1, result.output
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], result.output
