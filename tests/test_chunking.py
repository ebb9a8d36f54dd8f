"""Chunking of code and prose, and the per-document combination of chunk embeddings and scores."""

import numpy as np
import pytest

from phifilter.chunking import (
    DocEmbeddings,
    chunk_documents,
    code_pieces,
    first_pieces,
    pack,
    paragraph_pieces,
)


def words(texts):
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


CODE = '''import math

CONSTANT = 3


@decorator
def first(x):
    return x + 1


class Second:
    def method(self):
        return 2


async def third():
    pass
'''


def test_code_is_cut_at_top_level_defs_with_their_decorators():
    pieces = code_pieces(CODE)
    assert "".join(pieces) == CODE
    assert len(pieces) == 4
    assert pieces[0].startswith("import math") and "CONSTANT" in pieces[0]
    assert pieces[1].startswith("@decorator\ndef first")
    assert pieces[2].startswith("class Second") and "def method" in pieces[2]  # methods stay with their class
    assert pieces[3].startswith("async def third")


def test_unparsable_code_falls_back_to_line_windows():
    broken = "int main() {\n  return 0;\n}\n" * 20
    assert code_pieces(broken) is None
    pieces = first_pieces(broken, "auto")
    assert len(pieces) == 60 and "".join(pieces) == broken
    chunks = pack(pieces, words, budget=10)
    assert "".join(chunks) == broken
    assert all(words([c])[0] <= 10 for c in chunks) and len(chunks) > 1
    assert all(c.endswith("\n") for c in chunks)  # windows of whole lines


def test_prose_is_cut_into_paragraph_windows():
    paras = [" ".join(f"w{i}_{k}" for k in range(7)) for i in range(6)]
    text = "\n\n".join(paras)
    assert paragraph_pieces(text) == [p + "\n\n" for p in paras[:-1]] + [paras[-1]]
    chunks = pack(first_pieces(text, "prose"), words, budget=15)
    assert "".join(chunks) == text
    assert [words([c])[0] for c in chunks] == [14, 14, 14]  # two whole paragraphs per window


def test_an_overlong_line_is_cut_by_characters():
    line = " ".join(f"w{k}" for k in range(100))
    chunks = pack([line], words, budget=20)
    assert "".join(chunks) == line and len(chunks) >= 5
    assert all(words([c])[0] <= 21 for c in chunks)  # a word may straddle a cut


def test_chunk_documents_counts_chunked_and_cut_documents():
    short = "just a few words"
    long_prose = "\n\n".join(" ".join(["word"] * 8) for _ in range(10))  # 80 words
    chunks, owner, doc_tokens, cut = chunk_documents([short, long_prose, CODE], words, max_length=12, max_chunks=3)
    assert doc_tokens.tolist() == [4, 80, len(CODE.split())]
    assert owner.tolist().count(0) == 1 and chunks[0] == short
    assert owner.tolist().count(1) == 3 and cut.tolist() == [False, True, False]
    assert all(words([c])[0] <= 10 for c in chunks)  # 12 minus the two special tokens
    assert list(owner) == sorted(owner)


def make_doc_embeddings():
    vectors = np.array([[1, 0], [3, 0], [0, 2], [5, 5]], np.float32)
    doc = np.array([0, 0, 1, 2])
    tokens = np.array([10, 30, 5, 7])
    return DocEmbeddings(vectors, doc, tokens, np.array([40, 5, 7]), "chunk", np.array([True, False, False]))


def test_pooling_and_score_reduction():
    E = make_doc_embeddings()
    assert E.n_docs == 3 and E.chunked == 1 and E.truncated == 1
    np.testing.assert_allclose(E.pooled(), [[2, 0], [0, 2], [5, 5]])
    np.testing.assert_allclose(E.pooled(weighted=True), [[2.5, 0], [0, 2], [5, 5]])
    row_scores = np.array([0.2, 0.8, 0.4, 0.1])
    np.testing.assert_allclose(E.reduce_scores(row_scores, "mean"), [0.5, 0.4, 0.1])
    np.testing.assert_allclose(E.reduce_scores(row_scores, "max"), [0.8, 0.4, 0.1])
    sub = E.subset(np.array([2, 0]))
    assert sub.doc.tolist() == [0, 1, 1] and sub.doc_tokens.tolist() == [7, 40] and sub.cut.tolist() == [False, True]
    np.testing.assert_allclose(sub.pooled(), [[5, 5], [2, 0]])
    assert E.stats() == {"docs": 3, "chunks": 4, "chunked": 1, "truncated": 1, "chunking": "chunk"}


def test_unknown_doc_mode_is_refused():
    from phifilter import InputError
    from phifilter.chunking import chunking_of

    with pytest.raises(InputError, match="--doc-mode"):
        chunking_of("paragraphs")
