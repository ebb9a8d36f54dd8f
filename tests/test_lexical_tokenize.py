"""The one-pass tokeniser gives fastText exactly the strings the line-by-line one gave.

The bundled lexical model was trained on the line-by-line tokeniser's output, so the faster
:func:`phifilter.lexical.tokenize` must give the very same string for every text, or scores
move. ``reference`` below is that earlier implementation, kept here as the known answer; it is
compared on every real document at hand (the shipped seed set, the example shards and, when
present, the shared TheAlgorithms corpus) and on random unicode text full of line breaks,
indentation and digits of other scripts.
"""

import re
import string

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phifilter.lexical import TOKENIZERS, tokenize

from conftest import REPO, SHARED

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[^\sA-Za-z0-9_]+")
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _word(tok: str) -> str:
    return "0" if tok[0].isdigit() else tok.lower()


def _code(tok: str) -> str:
    if tok[0].isdigit():
        return "0"
    low = tok.lower()
    if tok[0].isalpha() or tok[0] == "_":
        parts = _PART.findall(tok)
        if len(parts) > 1:
            return " ".join([low] + [p.lower() for p in parts])
    return low


def reference(text: str, mode: str = "code", max_chars: int = 2_500) -> str:
    """The tokeniser the bundled model was trained with: line by line, token by token."""
    text = (text or "")[:max_chars]
    if mode == "plain":
        return " ".join(text.lower().split())
    out: list[str] = []
    for line in text.splitlines():
        if mode == "code":
            stripped = line.lstrip(" \t")
            if not stripped:
                out.append("<bl>")
                continue
            out.append("<nl>")
            if len(stripped) < len(line):
                out.append(f"<i{min(len(line[: len(line) - len(stripped)].expandtabs(4)), 16)}>")
        out.extend(map(_code if mode == "code" else _word, _TOKEN.findall(line)))
    return " ".join(out)


def real_documents() -> list[str]:
    files = [REPO / "data" / "seed" / "edu_seed.parquet", *sorted((REPO / "examples" / "shards").glob("*.parquet"))]
    corpus = SHARED / "data" / "corpora" / "thealgorithms.parquet"
    if corpus.is_file():
        files.append(corpus)
    return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]


@pytest.fixture(scope="module")
def documents():
    docs = real_documents()
    assert len(docs) > 2_000
    return docs


@pytest.mark.parametrize("mode", TOKENIZERS)
@pytest.mark.parametrize("max_chars", [2_500, 1_000_000])
def test_same_tokens_as_the_reference_on_every_real_document(documents, mode, max_chars):
    differ = [i for i, t in enumerate(documents) if tokenize(t, mode, max_chars) != reference(t, mode, max_chars)]
    assert not differ, f"{len(differ)} documents differ, first: {documents[differ[0]][:300]!r}"


def test_layout_edge_cases():
    cases = {
        "": "", "  ": "<bl>", "\n": "<bl>", "a\n": "<nl> a", "a\n\n": "<nl> a <bl>", "a\n  ": "<nl> a <bl>",
        "\ta": "<nl> <i4> a", " \t a": "<nl> <i5> a", "a\r\n  b\rc": "<nl> a <nl> <i2> b <nl> c",
        "x\u2028\x0c y\x85": "<nl> x <bl> <nl> <i1> y", "\xa0": "<nl>", " " * 40 + "x": "<nl> <i16> x",
        "getHTTPResponse2 ²x": "<nl> gethttpresponse2 get http response 2 0 x",
    }
    for text, want in cases.items():
        assert tokenize(text) == want == reference(text), repr(text)


# Characters that decide layout and token edges: every str.splitlines break, spaces, tabs,
# unicode spaces and digits, letters of other scripts, ASCII punctuation.
_EDGES = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029",
          " ", "  ", "    ", "\t", "\xa0", "\u3000", "²", "٣", "é", "ß", "Ä", "_", "__init__", "x1", "1x",
          "getUserName", "HTTPServer", "snake_case_name"]
_piece = st.one_of(st.sampled_from(_EDGES), st.text(string.ascii_letters + string.digits + string.punctuation, max_size=6),
                   st.text(max_size=4))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(pieces=st.lists(_piece, max_size=40), mode=st.sampled_from(TOKENIZERS), max_chars=st.sampled_from([7, 50, 2_500]))
def test_same_tokens_as_the_reference_on_random_text(pieces, mode, max_chars):
    text = "".join(pieces)
    assert tokenize(text, mode, max_chars) == reference(text, mode, max_chars)


def test_repeated_calls_and_a_full_cache_give_the_same_tokens(documents):
    """The shared conversion cache is cleared when full; results never depend on what it holds."""
    from phifilter import lexical

    first = [tokenize(t) for t in documents[:300]]
    old = lexical._CACHE_MAX
    try:
        lexical._CACHE_MAX = 10  # cleared on nearly every call
        assert [tokenize(t) for t in documents[:300]] == first
    finally:
        lexical._CACHE_MAX = old
    assert first == [reference(t) for t in documents[:300]]
