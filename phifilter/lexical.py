"""LexicalScorer: a fastText supervised model that scores educational value from the words alone.

The cheap scorer of the phi recipe: no embedder, no torch, about a thousand documents per
second on one CPU thread. It learns either the 0-5 grades (``labels="grades"``: six classes,
the score is the expected grade) or "score >= 3" (``labels="binary"``).

Documents are tokenised for both code and prose (:func:`tokenize`) before fastText sees them:
fastText itself only splits on whitespace, so ``self.x=foo(bar)`` would be one unseen word.

A fitted scorer is saved as ``<name>.bin`` (fastText's own binary format, not a pickle) plus a
metadata dict holding its parameters, its labels and the file's SHA-256; :meth:`LexicalScorer.load`
refuses a file whose hash differs. With ``thread=1`` training is deterministic: the same data and
parameters give a byte-identical ``.bin``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, ModelError
from .hashing import sha256_file

FORMAT = "phifilter-lexical"
FORMAT_VERSION = 1
LABEL_MODES = ("grades", "binary")
TOKENIZERS = ("plain", "words", "code")
LABEL_PREFIX = "__label__"

# "words"/"code": identifiers, numbers, and runs of punctuation are separate tokens.
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[^\sA-Za-z0-9_]+")
# camelCase / snake_case parts of an identifier (for "code").
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# "code" in one pass over the text: a blank line (spaces/tabs, then its newline), the start of a
# non-blank line (its indentation, possibly empty), or a token. The three kinds never look alike:
# only a blank line ends in "\n", only a line start is empty or all spaces/tabs, a token holds no
# whitespace. Line starts are found after "\n" only, so other line breaks become "\n" first.
_CODE_ITEM = re.compile(r"(?m)^[ \t]*\n|^[ \t]*(?![ \t\n]|\Z)|" + _TOKEN.pattern)
# Every line boundary of str.splitlines other than "\n" (\r\n counts as one).
_OTHER_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Output per distinct regex match, shared by all calls (tokens repeat, Zipf): a plain dict read
# through map(), so a document whose matches are all known costs no Python work per token.
_CACHE_MAX = 1 << 17
_CODE_CACHE: dict[str, str] = {}
_WORD_CACHE: dict[str, str] = {}


def tokenize(text: str, mode: str = "code", max_chars: int = 2_500) -> str:
    """One line of space-separated tokens for fastText.

    ``plain``: lower-cased whitespace split. ``words``: lower-cased identifiers/words, digit runs
    as ``0``, punctuation runs as their own tokens. ``code``: ``words`` plus the parts of
    compound identifiers (``get_user_name`` -> ``get user name``) and layout tokens: every line
    (as :meth:`str.splitlines` cuts them) starts with ``<nl>`` and, when indented, ``<iN>``
    (N = the indent's width, tab stops every 4 columns, capped at 16), lines of only spaces and
    tabs are ``<bl>``; these separate code (indentation, short lines) from prose.
    Only the first ``max_chars`` characters are read: the seed labels were given on excerpts
    of at most 2,500 characters (a file's start), so reading more would cost time and score
    something the labels never judged (a truncating embedding model reads 256 tokens, about
    1,000 characters).
    """
    text = (text or "")[:max_chars]
    if mode == "plain":
        return " ".join(text.lower().split())
    if mode == "words":
        return _join(_TOKEN.findall(text), _WORD_CACHE, _word_token)
    if mode != "code":
        raise InputError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {mode!r}")
    if _has_other_breaks(text):
        text = _OTHER_BREAKS.sub("\n", text)
    # a last line of only spaces/tabs has no "\n" to end its match: cut it off, add its <bl>
    last = text[text.rfind("\n") + 1:]
    if last and not last.strip(" \t"):
        return " ".join(filter(None, (_join(_CODE_ITEM.findall(text[: len(text) - len(last)]),
                                            _CODE_CACHE, _code_item), "<bl>")))
    return _join(_CODE_ITEM.findall(text), _CODE_CACHE, _code_item)


def _has_other_breaks(text: str) -> bool:
    """Does ``text`` hold a line break other than a line feed? (``in`` tests: ~30x faster than a regex search)"""
    if "\r" in text or "\x0b" in text or "\x0c" in text or "\x1c" in text or "\x1d" in text or "\x1e" in text:
        return True
    return not text.isascii() and ("\x85" in text or "\u2028" in text or "\u2029" in text)


def _join(items: list[str], cache: dict[str, str], convert) -> str:
    """``" ".join(convert(s) for s in items)``, with ``convert``'s results kept in ``cache``."""
    try:
        return " ".join(map(cache.__getitem__, items))
    except KeyError:
        pass
    if len(cache) > _CACHE_MAX:
        cache.clear()
    for s in set(items).difference(cache):
        cache[s] = convert(s)
    try:
        return " ".join(map(cache.__getitem__, items))
    except KeyError:  # another thread cleared the cache meanwhile
        return " ".join([convert(s) for s in items])


def _code_item(s: str) -> str:
    """The output for one match of ``_CODE_ITEM``."""
    if s.endswith("\n"):
        return "<bl>"
    if not s or s[0] in " \t":
        return f"<nl> <i{min(len(s.expandtabs(4)), 16)}>" if s else "<nl>"
    return _code_token(s)


def _word_token(tok: str) -> str:
    return "0" if tok[0].isdigit() else tok.lower()


def _code_token(tok: str) -> str:
    """The token, and after it the parts of a compound identifier, as one space-joined string."""
    if tok[0].isdigit():
        return "0"
    low = tok.lower()
    if tok[0].isalpha() or tok[0] == "_":
        parts = _PART.findall(tok)
        if len(parts) > 1:
            return " ".join([low] + [p.lower() for p in parts])
    return low


# What the training process runs: options as JSON, then the model file to write.
_CHILD = "import json, sys, fasttext; fasttext.train_supervised(**json.loads(sys.argv[1])).save_model(sys.argv[2])"


class LexicalScorer:
    """fastText supervised scorer of educational value (scikit-learn style).

    Parameters
    ----------
    labels : 'grades' (six classes 0-5; :meth:`predict_score` is the expected grade) or
        'binary' (two classes, score >= positive_threshold).
    tokenizer : one of :data:`TOKENIZERS`, see :func:`tokenize`.
    dim, epoch, lr, wordNgrams, minCount, bucket, loss : fastText's training options.
        ``bucket`` (hash slots for word n-grams) sets most of the file size: bucket x dim x 4 bytes.
    positive_threshold : grades at or above it count as "high educational value".
    max_chars : characters of each document read (see :func:`tokenize`).
    random_state : seeds the order in which fastText reads the training documents (and is passed
        as fastText's own seed, which in the 0.9.2 wheel does not change a one-thread model).
    thread : fastText training threads; 1 makes the model file reproducible byte for byte.
    """

    def __init__(
        self,
        labels: str = "grades",
        tokenizer: str = "code",
        dim: int = 16,
        epoch: int = 10,
        lr: float = 0.5,
        wordNgrams: int = 2,
        minCount: int = 1,
        bucket: int = 100_000,
        loss: str = "softmax",
        positive_threshold: int = 3,
        max_chars: int = 2_500,
        random_state: int = 0,
        thread: int = 1,
    ):
        self.labels = labels
        self.tokenizer = tokenizer
        self.dim = dim
        self.epoch = epoch
        self.lr = lr
        self.wordNgrams = wordNgrams
        self.minCount = minCount
        self.bucket = bucket
        self.loss = loss
        self.positive_threshold = positive_threshold
        self.max_chars = max_chars
        self.random_state = random_state
        self.thread = thread

    # -- scikit-learn plumbing -------------------------------------------------------------
    def get_params(self, deep: bool = False) -> dict:
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params) -> "LexicalScorer":
        # scikit-learn's clone/GridSearch contract; used on unfitted copies only
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"LexicalScorer has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def _check_params(self) -> None:
        if self.labels not in LABEL_MODES:
            raise InputError(f"labels must be one of {', '.join(LABEL_MODES)}, not {self.labels!r}")
        if self.tokenizer not in TOKENIZERS:
            raise InputError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {self.tokenizer!r}")

    def _label(self, score: float) -> str:
        if self.labels == "binary":
            return "high" if score >= self.positive_threshold else "low"
        return str(int(round(float(score))))

    def _lines(self, texts: Sequence[str]) -> list[str]:
        return [tokenize(t, self.tokenizer, self.max_chars) for t in texts]

    # -- training ---------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], scores: Sequence[float]) -> "LexicalScorer":
        """Train on documents and their 0-5 scores; returns self."""
        self._check_params()
        scores = np.asarray(scores, dtype=float)
        if len(texts) != len(scores):
            raise InputError(f"{len(texts)} texts but {len(scores)} scores")
        if len(texts) == 0:
            raise InputError("no training documents")
        if np.isnan(scores).any() or scores.min() < 0 or scores.max() > 5:
            raise InputError("scores must be numbers from 0 to 5")
        labels = [self._label(s) for s in scores]
        if len(set(labels)) < 2:
            raise InputError(f"the training scores hold a single class ({labels[0]}); a scorer needs at least two")
        lines = self._lines(texts)
        # fastText (0.9.2 wheel) stops with "Encountered NaN" now and then. Measured on the seed
        # set: some calls succeed when simply repeated (the failure depends on process state), some
        # line orders fail at every lr down to 0.01 while the next order trains, and some lr are
        # too high for the data (0.5 with wordNgrams 1). So a failed run is first repeated as is
        # (a success then gives the very same model as a clean run), then tried with the next
        # seeded line orders, then with lr halved; the parameters are never changed: ``lr_``,
        # ``order_seed_`` and ``fit_attempts_`` record what trained.
        for attempt, (order_seed, lr) in enumerate(self._fallbacks()):
            model = self._train_once(lines, labels, order_seed, lr)
            if model is not None:
                break
        else:
            raise InputError(
                f"fastText diverged (Encountered NaN) on {len(texts)} documents at lr={self.lr} and below, "
                "in several line orders: train on more documents, or check that the texts are not all alike")
        self.fit_attempts_ = attempt + 1
        self.lr_ = lr
        self.order_seed_ = order_seed
        self._set_model(model)
        return self

    def _fallbacks(self) -> list[tuple[int, float]]:
        """(line-order seed, lr) of each run fit tries, in order (see the comment in fit)."""
        rs, lr = int(self.random_state), float(self.lr)
        return [(rs, lr), (rs, lr), (rs + 1, lr), (rs + 2, lr), (rs + 3, lr / 2), (rs + 4, lr / 4)]

    def _train_once(self, lines: list[str], labels: list[str], order_seed: int, lr: float):
        """One fastText run on the lines in a seeded order; None if it diverged."""
        import fasttext

        with tempfile.TemporaryDirectory(prefix="phifilter-lexical-") as tmp:
            train_file = Path(tmp) / "train.txt"
            # fastText reads the file in order, and SGD on data sorted by source or label learns
            # the last block best: shuffle. This is also what random_state changes (fastText's own
            # seed leaves a one-thread model unchanged in the 0.9.2 wheel, measured).
            order = np.random.default_rng(order_seed).permutation(len(lines))
            with open(train_file, "w", encoding="utf-8") as f:
                for i in order:
                    f.write(f"{LABEL_PREFIX}{labels[i]} {lines[i]}\n")
            options = dict(
                input=str(train_file), dim=int(self.dim), epoch=int(self.epoch), lr=lr,
                wordNgrams=int(self.wordNgrams), minCount=int(self.minCount), bucket=int(self.bucket),
                loss=self.loss, seed=int(self.random_state), thread=int(self.thread), verbose=0,
            )
            model_file = Path(tmp) / "model.bin"
            # Trained in a fresh Python process: fastText 0.9.2 diverges ("Encountered NaN") far
            # more often in a process that has already run or loaded fastText models (measured: a
            # call that failed six times inside a test process, and again in a forked child of it,
            # trained at once in a fresh process), so every run gets a clean one (~0.3 s).
            proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(options), str(model_file)],
                                  capture_output=True, text=True)
            if proc.returncode == 0 and model_file.is_file():
                return fasttext.load_model(str(model_file))
            if "NaN" in proc.stderr:
                return None
            raise RuntimeError(f"fastText training failed: {proc.stderr.strip()[-2000:]}")

    def _set_model(self, model) -> None:
        self.model_ = model
        self.__dict__.pop("vocabulary_", None)
        self.classes_ = sorted(lab[len(LABEL_PREFIX):] for lab in model.get_labels())

    # -- scoring ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModelError("LexicalScorer is not fitted: call fit() or LexicalScorer.load() first")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, len(classes_)], columns in the order of ``classes_``."""
        self._check_fitted()
        return self._proba_of_lines(self._lines(texts))

    def _proba_of_lines(self, lines: list[str]) -> np.ndarray:
        if not lines:
            return np.zeros((0, len(self.classes_)), dtype=np.float64)
        labels, probs = self.model_.predict(lines, k=-1, threshold=0.0)
        col = {c: i for i, c in enumerate(self.classes_)}
        out = np.zeros((len(lines), len(self.classes_)), dtype=np.float64)
        for i, (labs, ps) in enumerate(zip(labels, probs)):
            for lab, p in zip(labs, ps):
                out[i, col[lab[len(LABEL_PREFIX):]]] = p
        # fastText's softmax probabilities are rounded/clipped slightly; make rows sum to 1
        out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
        return out

    def predict_proba_high(self, texts: Sequence[str]) -> np.ndarray:
        """P(score >= positive_threshold) for each document."""
        return self._high(self.predict_proba(texts))

    def high_and_unseen(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """P(score >= positive_threshold) and the share of each document's tokens that the
        training documents never held (the scorer's vocabulary), tokenising each text once.

        A high unseen share means the lexical score rests on little evidence: a kind of document
        the scorer never saw. The cascade's novelty rule sends such documents to the embedder."""
        self._check_fitted()
        lines = self._lines(texts)
        return self._high(self._proba_of_lines(lines)), self._unseen_of_lines(lines)

    def unseen_share(self, texts: Sequence[str]) -> np.ndarray:
        """Share of each document's tokens not in the training vocabulary (0 for a text with no tokens)."""
        self._check_fitted()
        return self._unseen_of_lines(self._lines(texts))

    def _unseen_of_lines(self, lines: list[str]) -> np.ndarray:
        vocab = self.__dict__.get("vocabulary_")
        if vocab is None:  # built once per loaded model (~0.1 s for the bundled one)
            vocab = self.vocabulary_ = frozenset(self.model_.get_words())
        out = np.zeros(len(lines), dtype=np.float64)
        for i, line in enumerate(lines):
            tokens = line.split()
            if tokens:
                out[i] = sum(t not in vocab for t in tokens) / len(tokens)
        return out

    def _high(self, P: np.ndarray) -> np.ndarray:
        if self.labels == "binary":
            return P[:, self.classes_.index("high")] if "high" in self.classes_ else np.zeros(len(P))
        high = [i for i, c in enumerate(self.classes_) if int(c) >= self.positive_threshold]
        return P[:, high].sum(axis=1)

    def predict_score(self, texts: Sequence[str]) -> np.ndarray:
        """Expected 0-5 score (grades); for a binary model, 5 x P(high)."""
        if self.labels == "binary":
            return 5.0 * self.predict_proba_high(texts)
        P = self.predict_proba(texts)
        grades = np.array([float(c) for c in self.classes_])
        return P @ grades

    def edu_score(self, texts: Sequence[str]) -> np.ndarray:
        """The score in [0, 1]: expected grade / 5 (grades) or P(high) (binary)."""
        if self.labels == "binary":
            return self.predict_proba_high(texts)
        return self.predict_score(texts) / 5.0

    # -- files ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, name: str = "lexical") -> dict:
        """Write ``folder/<name>.bin`` and ``folder/<name>.json``; returns the metadata dict.

        The dict (file name, SHA-256, parameters, classes) is what :meth:`load` needs; a model
        folder may keep it in its own ``phifilter.json`` instead of the ``.json`` beside the file.
        """
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.bin"
        from .atomic import write_atomic, write_text

        write_atomic(path, lambda tmp: self.model_.save_model(str(tmp)))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "file": path.name,
            "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size,
            "params": self.get_params(),
            "classes": list(self.classes_),
        }
        write_text(folder / f"{name}.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    @classmethod
    def load(cls, folder: str | os.PathLike, meta: dict | str = "lexical") -> "LexicalScorer":
        """A fitted scorer from ``folder``; ``meta`` is :meth:`save`'s dict or the ``name`` it was saved as.

        Raises :class:`~phifilter.errors.ModelError` when the file is missing or its SHA-256
        differs from the recorded one (a modified or foreign file is never loaded).
        """
        import fasttext

        folder = Path(folder)
        meta_path = None
        if isinstance(meta, str):
            meta_path = folder / f"{meta}.json"
            try:
                meta = json.loads(meta_path.read_text())
            except FileNotFoundError:
                raise ModelError(f"{meta_path}: no lexical model metadata here; is {folder} a lexical model folder?") from None
            except json.JSONDecodeError as exc:
                raise ModelError(f"{meta_path}: not valid JSON ({exc}); retrain or restore the file") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelError(f"{folder}: lexical metadata is not a {FORMAT!r} object; retrain or restore the model")
        from .modelmeta import check_lexical_meta

        check_lexical_meta(meta, meta_path if meta_path else folder / "phifilter.json")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(f"{folder}: lexical model format {meta['format_version']} is newer than this "
                             f"phifilter reads ({FORMAT_VERSION}); upgrade phifilter")
        from .modelfolder import part_path

        path = part_path(folder, meta.get("file"))  # a plain name inside the folder, before anything opens it
        if not path.is_file():
            raise ModelError(f"{path}: lexical model file missing; restore it or retrain the model")
        digest = sha256_file(path)
        if digest != meta["sha256"]:
            raise ModelError(f"{path}: SHA-256 {digest[:12]}... differs from the recorded {meta['sha256'][:12]}...; "
                             "the file was modified or belongs to another model: retrain or restore it")
        from .fasttext_file import check_fasttext_file

        check_fasttext_file(path)  # sizes consistent with the file's length, before fastText's loader trusts them
        known = set(cls().get_params())
        scorer = cls(**{k: v for k, v in meta["params"].items() if k in known})
        scorer._set_model(fasttext.load_model(str(path)))
        if scorer.classes_ != list(meta["classes"]):
            raise ModelError(f"{path}: classes {scorer.classes_} differ from the recorded {meta['classes']}")
        return scorer
