"""Syntax-tree similarity that ignores names, literals, comments and docstrings.

A piece of Python is reduced to *units*: every function (methods and nested functions included)
and the module's remaining top-level statements. A unit becomes the pre-order sequence of its
syntax-node types (``FunctionDef arguments arg Return BinOp Name Add Constant ...``): identifiers,
attribute names, literal values, comments and docstrings leave no trace, so a copy with every
name renamed and its docstring dropped has exactly the sequence of the original.

Two units are compared in two steps:

1. **Prefilter** (all pairs, one sparse matrix product): the Jaccard similarity of the
   multisets of node-type 4-grams. Each gram's k-th occurrence is its own element, so the set
   Jaccard of these elements equals the multiset Jaccard exactly; only the problems' elements
   are kept as columns, since a document's other elements only add to its size.
2. **Full comparison** (only the pairs the prefilter passes): the similarity ratio of the two
   node sequences in order (:class:`difflib.SequenceMatcher`), which a bag of grams cannot see.

Code that does not parse (another language, a fragment, a Markdown answer) is cut into blocks
that start at a ``def`` line; a block that parses on its own is compared as above, any other by
a *token* sequence (a regex tokenizer: identifiers become ``I``, numbers ``N``, strings ``S``,
keywords and operators stay, comments go) with 6-grams of tokens in step 1.

Tiny problems prove nothing (``return len(s)`` is in every library): a problem unit's score is
scaled by ``min(1, elements / FULL_SIZE)``, so a unit needs 24 grams for its full weight.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

AST_N = 4  # node-type n-grams
TOKEN_N = 6  # token n-grams for code that does not parse
FULL_SIZE = 24  # elements a problem unit needs for its full weight
PREFILTER = 0.3  # prefilter Jaccard (after the size weight) a pair needs for the full comparison
CANDIDATES = 3  # problems per unit given the full comparison (the best by prefilter)
MIN_UNIT = 8  # nodes (or tokens) a unit needs to be compared at all
MAX_SOURCE = 2_000_000  # characters parsed per document (longer ones: the first this many)

_SKIP_TYPES = frozenset({ast.Load, ast.Store, ast.Del})  # contexts say nothing about structure
_FUNCTIONS = frozenset({ast.FunctionDef, ast.AsyncFunctionDef})
_NOT_REST = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom})
_TOKEN = re.compile(
    r"(?P<comment>#[^\n]*)"
    r"|(?P<str>[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'))"
    r"|(?P<num>\b\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?[jJ]?\b|\.\d+)"
    r"|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op>\*\*=?|//=?|->|:=|<<=?|>>=?|[-+*/%&|^<>=!]=?|[()\[\]{}:,.;@~])"
)
_DEF_LINE = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(", re.M)
_KEYWORDS = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ()))


@dataclass
class Unit:
    """One comparable piece: its normalised sequence, how it was made, its lines (1-based)."""

    seq: tuple[str, ...]
    kind: str  # "ast" or "tokens"
    first_line: int
    last_line: int


# ---------------------------------------------------------------------------------------------
# normalising


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop every docstring and bare string statement (a comment written as a string)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                            and isinstance(s.value.value, str))]
            node.body = kept or [ast.Pass()]
    return tree


def _is_docstring(stmt) -> bool:
    return (type(stmt) is ast.Expr and type(stmt.value) is ast.Constant  # noqa: E721 (exact types: fast)
            and type(stmt.value.value) is str)


def flatten(tree: ast.AST) -> tuple[list[str], list[tuple[int, int, ast.AST]]]:
    """One pre-order pass: the node types of the whole tree (expression contexts, docstrings and
    bare string statements left out) and, for every function and every top-level statement,
    the slice of that list its subtree fills (pre-order keeps a subtree contiguous)."""
    seq: list[str] = []
    spans: list[tuple[int, int, ast.AST]] = []
    top = set(map(id, getattr(tree, "body", [])))
    stack: list = [(tree, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            spans.append((node._phi_start, len(seq), node))
            continue
        if type(node) in _SKIP_TYPES:
            continue
        tracked = id(node) in top or type(node) in _FUNCTIONS
        if tracked:
            node._phi_start = len(seq)
            stack.append((node, True))
        seq.append(type(node).__name__)
        children = []
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                children += [c for c in value if isinstance(c, ast.AST) and not _is_docstring(c)]
            elif isinstance(value, ast.AST):
                children.append(value)
        stack.extend((c, False) for c in reversed(children))
    return seq, spans


def node_sequence(node: ast.AST) -> tuple[str, ...]:
    """Pre-order node types of ``node`` (expression contexts, docstrings left out)."""
    return tuple(flatten(node)[0])


def token_sequence(text: str) -> tuple[str, ...]:
    """Regex tokens with names, numbers and strings normalised and comments dropped."""
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "comment":
            continue
        if kind == "str":
            out.append("S")
        elif kind == "num":
            out.append("N")
        elif kind == "name":
            word = m.group()
            out.append(word if word in _KEYWORDS else "I")
        else:
            out.append(m.group())
    return tuple(out)


def _parse(text: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():  # invalid escapes in old code: not ours to report
            warnings.simplefilter("ignore")
            return ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def tree_units(tree: ast.Module, line_offset: int = 0) -> list[Unit]:
    """Every function of a parsed module, and its other top-level statements together."""
    seq, spans = flatten(tree)
    units = []
    rest: list[str] = []
    lines: list[int] = []
    for a, b, node in sorted(spans, key=lambda s: s[0]):
        if type(node) in _FUNCTIONS:
            if b - a >= MIN_UNIT:
                units.append(Unit(tuple(seq[a:b]), "ast", node.lineno + line_offset,
                                  (node.end_lineno or node.lineno) + line_offset))
        elif type(node) not in _NOT_REST:
            rest += seq[a:b]
            lines += [node.lineno, node.end_lineno or node.lineno]
    if len(rest) >= MIN_UNIT:
        units.append(Unit(tuple(rest), "ast", min(lines) + line_offset, max(lines) + line_offset))
    return units


def def_blocks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each block that starts at a ``def`` line and runs until a non-blank
    line indented no deeper than that ``def`` (how a function ends in any Python-like text)."""
    lines = text.splitlines()
    blocks = []
    for m in _DEF_LINE.finditer(text):
        start = text.count("\n", 0, m.start())
        indent = len(m.group(1).expandtabs())
        end = start + 1
        while end < len(lines):
            line = lines[end]
            if line.strip() and len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith((")", "]", "}")):
                break
            end += 1
        blocks.append((start + 1, "\n".join(lines[start:end])))
    return blocks


def document_units(text: str) -> list[Unit]:
    """The units of a document: by its syntax tree when it parses, else block by block."""
    text = text[:MAX_SOURCE]
    tree = _parse(text)
    if tree is not None:
        return tree_units(tree)
    units = []
    for first, block in def_blocks(text):
        sub = _parse(textwrap.dedent(block))
        if sub is not None:
            units += [u for u in tree_units(sub, first - 1) if u.seq[0].endswith("FunctionDef")][:1]
        else:
            seq = token_sequence(block)
            if len(seq) >= MIN_UNIT:
                units.append(Unit(seq, "tokens", first, first + block.count("\n")))
    return units


def problem_units(source: str) -> tuple[list[Unit], list[Unit]]:
    """A problem's reference code as (syntax units, token units): each function and the rest,
    with docstrings dropped; the token units are the same pieces, unparsed and re-tokenised."""
    tree = _parse(source)
    if tree is None:
        seq = token_sequence(source)
        return [], ([Unit(seq, "tokens", 1, source.count("\n") + 1)] if len(seq) >= MIN_UNIT else [])
    tree = strip_docstrings(tree)
    syntax = tree_units(tree)
    tokens = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            seq = token_sequence(ast.unparse(node))
            if len(seq) >= MIN_UNIT:
                tokens.append(Unit(seq, "tokens", node.lineno, node.end_lineno or node.lineno))
    return syntax, tokens


# ---------------------------------------------------------------------------------------------
# comparing


def _elements(seq: Sequence[str], n: int) -> list[tuple]:
    """The n-grams of ``seq`` as a set whose Jaccard is the multiset Jaccard: (gram, k-th time)."""
    seen: dict[tuple, int] = {}
    out = []
    if len(seq) < n:
        grams = [tuple(seq)]
    else:
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    for g in grams:
        k = seen.get(g, 0)
        seen[g] = k + 1
        out.append((g, k))
    return out


@dataclass
class _Side:
    """The problems' units of one kind as a sparse binary matrix over their own elements."""

    n: int
    units: list[Unit] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    vocab: dict = field(default_factory=dict)
    matrix: object = None
    sizes: np.ndarray | None = None
    weight: np.ndarray | None = None

    def add(self, unit: Unit, problem: int) -> None:
        self.units.append(unit)
        self.owner.append(problem)

    def freeze(self) -> None:
        from scipy.sparse import csr_matrix

        rows, cols = [], []
        for i, u in enumerate(self.units):
            for e in _elements(u.seq, self.n):
                rows.append(i)
                cols.append(self.vocab.setdefault(e, len(self.vocab)))
        shape = (len(self.units), max(1, len(self.vocab)))
        self.matrix = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape).T.tocsr()
        self.sizes = np.asarray([max(1, len(u.seq) - self.n + 1) for u in self.units], np.float32)
        self.weight = np.minimum(1.0, self.sizes / FULL_SIZE).astype(np.float32)

    def encode(self, units: Sequence[Unit]):
        """Units as (sparse matrix over this side's elements, element count per unit)."""
        from scipy.sparse import csr_matrix

        rows, cols = [], []
        sizes = np.zeros(len(units), np.float32)
        for i, u in enumerate(units):
            elements = _elements(u.seq, self.n)
            sizes[i] = len(elements)
            for e in elements:
                j = self.vocab.get(e)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        shape = (len(units), max(1, len(self.vocab)))
        return csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape), sizes


@dataclass
class SyntaxMatch:
    similarity: float  # 0 when nothing comparable
    problem: int  # index into the problem list; -1 when none
    kind: str | None  # "ast" or "tokens"
    first_line: int | None
    last_line: int | None


NO_MATCH = SyntaxMatch(0.0, -1, None, None, None)


class SyntaxIndex:
    """The evaluation problems' units, ready to be compared with many documents' units."""

    def __init__(self, sources: Sequence[str]):
        self.sides = {"ast": _Side(AST_N), "tokens": _Side(TOKEN_N)}
        for i, src in enumerate(sources):
            syntax, tokens = problem_units(src)
            for u in syntax:
                self.sides["ast"].add(u, i)
            for u in tokens:
                self.sides["tokens"].add(u, i)
        for side in self.sides.values():
            side.freeze()
        self.pairs_compared = 0  # full comparisons made (the prefilter's cost saving, for stats)

    def match_documents(self, docs_units: Sequence[Sequence[Unit]]) -> list[SyntaxMatch]:
        """The best match of each document (a list of its units) over every problem."""
        best = [NO_MATCH] * len(docs_units)
        for kind, side in self.sides.items():
            flat = [(d, u) for d, units in enumerate(docs_units) for u in units if u.kind == kind]
            if not flat or not side.units:
                continue
            matrix, sizes = side.encode([u for _, u in flat])
            inter = (matrix @ side.matrix).toarray()  # units x problem units
            union = sizes[:, None] + side.sizes[None, :] - inter
            jac = inter / np.maximum(union, 1.0) * side.weight[None, :]
            top = np.argsort(-jac, axis=1)[:, :CANDIDATES]
            for row, (doc, unit) in enumerate(flat):
                cand = [j for j in top[row] if jac[row, j] >= PREFILTER]
                if not cand:
                    j = int(top[row, 0])
                    score = float(jac[row, j])
                else:
                    self.pairs_compared += len(cand)
                    ratios = [min(difflib.SequenceMatcher(None, side.units[j].seq, unit.seq, autojunk=False).ratio()
                                  * float(side.weight[j]), float(jac[row, j])) for j in cand]
                    k = int(np.argmax(ratios))
                    j, score = int(cand[k]), float(ratios[k])
                if score > best[doc].similarity:
                    best[doc] = SyntaxMatch(score, side.owner[j], kind, unit.first_line, unit.last_line)
        return best


def units_of_all(texts: Iterable[str]) -> list[list[Unit]]:
    return [document_units(t) if t else [] for t in texts]
