"""EduClassifier: an embedder plus a random forest that predicts "high educational value".

A scikit-learn style estimator: the constructor only stores its arguments, ``fit`` does the
work and returns ``self``, learned attributes end in ``_``. A fitted classifier is saved as a
folder::

    model/
      forest.skops     the scikit-learn forest, serialised with skops (no pickle)
      phifilter.json   embedder identity and hashes, thresholds, metrics, data hash, versions
      README.md        the model card

Loading refuses a folder whose ``forest.skops`` hash differs from the one recorded in
``phifilter.json``, a forest holding types outside :data:`TRUSTED_TYPES`, and (at first use)
an embedder whose dimension or file hashes differ from the ones the forest was trained on.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from .embed import DEFAULT_EMBEDDER, Embedder
from .errors import ModelError

FORMAT = "phifilter-model"
FORMAT_VERSION = 1
FOREST_FILE = "forest.skops"
META_FILE = "phifilter.json"
CARD_FILE = "README.md"
# Types a model folder may contain beyond the ones skops trusts by default. Anything else in a
# forest file is refused at load time, so a crafted file cannot run code.
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("phifilter", "scikit-learn", "numpy", "skops", "torch", "sentence-transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class EduClassifier:
    """Embed documents, then predict P(educational score >= positive_threshold) with a forest.

    Parameters
    ----------
    embedder : hub name, local folder, an :class:`Embedder`, or None for all-MiniLM-L6-v2.
    n_estimators, max_depth, min_samples_leaf, max_features, class_weight :
        passed to :class:`sklearn.ensemble.RandomForestClassifier`.
    positive_threshold : label scores (0-5) at or above this count as positive.
    threshold : decision threshold on ``edu_score`` for "keep" (used by summaries and filter).
    max_length, device, batch_size : embedder settings when ``embedder`` is not an Embedder.
    n_jobs, random_state : as in scikit-learn.
    """

    def __init__(
        self,
        embedder: str | os.PathLike | Embedder | None = None,
        n_estimators: int = 300,
        max_depth: int | None = None,
        min_samples_leaf: int = 3,
        max_features: str | float | int = "sqrt",
        class_weight: str | None = "balanced_subsample",
        positive_threshold: int = 3,
        threshold: float = 0.5,
        max_length: int = 256,
        device: str = "auto",
        batch_size: int = 64,
        n_jobs: int | None = -1,
        random_state: int | None = 0,
    ):
        self.embedder = embedder
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.positive_threshold = positive_threshold
        self.threshold = threshold
        self.max_length = max_length
        self.device = device
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- construction -----------------------------------------------------------------------

    def get_params(self, deep: bool = False) -> dict:
        names = (
            "embedder n_estimators max_depth min_samples_leaf max_features class_weight "
            "positive_threshold threshold max_length device batch_size n_jobs random_state"
        ).split()
        return {n: getattr(self, n) for n in names}

    def _make_embedder(self) -> Embedder:
        if isinstance(self.embedder, Embedder):
            return self.embedder
        return Embedder(
            self.embedder, device=self.device, max_length=self.max_length, batch_size=self.batch_size
        )

    def _make_forest(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def binarize(self, scores: Sequence[float]) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64) >= self.positive_threshold

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], scores: Sequence[float], embeddings: np.ndarray | None = None):
        """Fit on documents and their 0-5 scores (precomputed ``embeddings`` skip the embedder)."""
        self.embedder_ = self._make_embedder()
        X = self.embedder_.encode(list(texts)) if embeddings is None else np.asarray(embeddings, np.float32)
        y = self.binarize(scores)
        if y.all() or not y.any():
            raise ModelError(
                f"all {len(y)} training labels fall on one side of --positive-threshold "
                f"{self.positive_threshold}; the classifier needs both classes"
            )
        self.forest_ = self._make_forest().fit(X, y)
        self.embedder_info_ = self.embedder_.describe()
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "forest_"):
            raise ModelError("this EduClassifier is not fitted; call fit() or EduClassifier.load()")

    # -- prediction -------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        self._check_embedder()
        try:
            return self.embedder_.encode(texts)
        except (TypeError, UnicodeEncodeError):
            # Python strings can hold lone surrogates (not valid Unicode); the tokenizer refuses
            # them. Replace them as texts_from_array replaces invalid UTF-8 read from Parquet.
            return self.embedder_.encode([_valid_unicode(t) for t in texts])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """[n, 2] probabilities of (low, high) educational value."""
        p = self.edu_score(texts).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.edu_score(texts) >= self.threshold

    def edu_score(self, texts: Sequence[str]) -> np.ndarray:
        """float32 P(high educational value) per text; empty or blank texts score 0."""
        texts = list(texts)
        return self.score_embeddings(self.embed(texts), _empty_mask(texts))

    def score_embeddings(self, X: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
        """Scores from precomputed embeddings (rows flagged ``empty`` get 0)."""
        self._check_fitted()
        if len(X) == 0:
            return np.zeros(0, dtype=np.float32)
        p = self.forest_.predict_proba(X)[:, list(self.forest_.classes_).index(True)]
        p = p.astype(np.float32)
        if empty is not None:
            p[np.asarray(empty, dtype=bool)] = 0.0
        return p

    # -- embedder check ---------------------------------------------------------------------

    def _check_embedder(self) -> None:
        if getattr(self, "_embedder_checked", False):
            return
        info = getattr(self, "embedder_info_", {}) or {}
        dim = self.embedder_.dim
        if dim != self.n_features_in_:
            raise ModelError(
                f"embedder {self.embedder_.name} gives {dim}-dimensional embeddings but the forest "
                f"was trained on {self.n_features_in_}; use the embedder the model was trained with "
                f"({info.get('name', 'unknown')})"
            )
        want = info.get("sha256") or {}
        got = self.embedder_.hashes
        for name, digest in want.items():
            if name in got and got[name] != digest:
                raise ModelError(
                    f"embedder {self.embedder_.name}: {name} has SHA-256 {got[name][:16]}… but the model "
                    f"was trained with {digest[:16]}…; scores would be meaningless"
                )
        self._embedder_checked = True

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, metrics: dict | None = None, training_data: dict | None = None,
             card: str | None = None) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place)."""
        import shutil

        import skops.io as sio

        from .corpus import output_error, remove_stale_siblings

        self._check_fitted()
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_siblings(path)  # what a killed save left: .<name>.tmp-<pid>, .<name>.old-<pid>
            tmp.mkdir()
        except OSError as e:
            raise output_error(path, e) from None
        try:
            sio.dump(self.forest_, tmp / FOREST_FILE)
            _make_zip_reproducible(tmp / FOREST_FILE)
            params = {k: v for k, v in self.get_params().items() if k != "embedder"}
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "head": "random_forest_classifier",
                "params": params,
                "embedder": {**self.embedder_info_, "source": _embedder_source(self.embedder)},
                "positive_threshold": self.positive_threshold,
                "threshold": self.threshold,
                "n_features": int(self.n_features_in_),
                "metrics": metrics or getattr(self, "metrics_", None) or {},
                "training_data": training_data or getattr(self, "training_data_", None) or {},
                "files": {FOREST_FILE: _sha256_file(tmp / FOREST_FILE)},
                "versions": library_versions(),
                "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
            if card:
                (tmp / CARD_FILE).write_text(card)
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except OSError as e:  # a full disk, no permission: one clear line, the old folder kept
            shutil.rmtree(tmp, ignore_errors=True)
            raise output_error(path, e) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, embedder: str | os.PathLike | None = None,
             device: str = "auto", batch_size: int = 64, max_length: int | None = None,
             embedder_revision: str | None = None, embedder_sha256: dict[str, str] | None = None) -> "EduClassifier":
        """Load a model folder (None: the bundled default). Refuses foreign or tampered folders.

        The embedder is loaded at the revision the model recorded unless ``embedder_revision``
        says otherwise; ``embedder_sha256`` ({file: hex}) pins its files on top of the check
        against the hashes the model was trained with.
        """
        import skops.io as sio

        path = Path(path) if path is not None else default_model_path()
        meta = read_model_meta(path)
        forest_file = path / FOREST_FILE
        if not forest_file.is_file():
            raise ModelError(f"{path}: model folder has no {FOREST_FILE}")
        recorded = (meta.get("files") or {}).get(FOREST_FILE)
        actual = _sha256_file(forest_file)
        if recorded != actual:
            raise ModelError(
                f"{forest_file}: SHA-256 does not match the one recorded in {META_FILE}; "
                "the model folder was modified after it was saved, refusing to load it"
            )
        try:
            untrusted = sio.get_untrusted_types(file=forest_file)
        except Exception as e:
            raise ModelError(f"{forest_file}: not a skops file ({e})") from None
        refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if refused:
            raise ModelError(f"{forest_file}: contains untrusted types {', '.join(refused)}; refusing to load it")
        forest = sio.load(forest_file, trusted=list(untrusted))
        params = dict(meta.get("params") or {})
        info = meta.get("embedder") or {}
        params.update(
            embedder=embedder if embedder is not None else info.get("source"),
            device=device,
            batch_size=batch_size,
            max_length=max_length or info.get("max_length") or params.get("max_length", 256),
        )
        known = set(cls().get_params())
        clf = cls(**{k: v for k, v in params.items() if k in known})
        clf.forest_ = forest
        clf.n_features_in_ = int(meta.get("n_features") or forest.n_features_in_)
        if clf.n_features_in_ != forest.n_features_in_:
            raise ModelError(f"{path}: {META_FILE} says {clf.n_features_in_} features, the forest has {forest.n_features_in_}")
        if info.get("dim") is not None and int(info["dim"]) != clf.n_features_in_:
            raise ModelError(f"{path}: embedder dimension {info['dim']} does not match the forest's {clf.n_features_in_} features")
        clf.embedder_ = clf._make_embedder()
        clf.embedder_.revision = embedder_revision or info.get("revision")
        clf.embedder_.sha256 = dict(embedder_sha256) if embedder_sha256 else None
        clf.embedder_info_ = info
        clf.metrics_ = meta.get("metrics") or {}
        clf.training_data_ = meta.get("training_data") or {}
        clf.path_ = path
        clf.forest_sha256_ = actual
        return clf


def _make_zip_reproducible(path: Path) -> None:
    """Re-pack a skops archive so the same forest always gives the same bytes (and hash).

    skops names array files and memo keys after Python ``id()`` values, and zip entries carry
    the time of writing; both change from run to run. Files are renamed in order of first
    reference in ``schema.json`` and written with a fixed timestamp.
    """
    import re
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = {info.filename: src.read(info.filename) for info in src.infolist()}
    schema = entries.pop("schema.json").decode("utf-8")
    renames: dict[str, str] = {}
    for name in re.findall(r'"([^"/\\]+\.npy)"', schema):
        if name in entries and name not in renames:
            renames[name] = f"{len(renames):06d}.npy"
    schema = re.sub(r'"([^"/\\]+\.npy)"', lambda m: f'"{renames.get(m.group(1), m.group(1))}"', schema)
    ids: dict[str, str] = {}  # "__id__" memo keys are id()s too; renumber them consistently
    schema = re.sub(r'"__id__": (\d+)', lambda m: f'"__id__": {ids.setdefault(m.group(1), str(len(ids)))}', schema)
    files = {"schema.json": schema.encode("utf-8")}
    files.update({renames.get(k, k): v for k, v in entries.items()})
    tmp = path.with_name(path.name + ".repack")
    with zipfile.ZipFile(tmp, "w") as dst:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, files[name], compresslevel=9)
    os.replace(tmp, path)


def _embedder_source(embedder) -> str | None:
    if embedder is None:
        return None
    if isinstance(embedder, Embedder):
        embedder = embedder.model
    if embedder is None or str(embedder) == DEFAULT_EMBEDDER:
        return None
    return str(embedder)


def _valid_unicode(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _empty_mask(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter((not t or t.isspace() for t in texts), dtype=bool, count=len(texts))


def default_model_path() -> Path:
    """The bundled default model folder (trained on the shipped seed set)."""
    return Path(__file__).resolve().parent / "models" / "default"


def read_model_meta(path: str | os.PathLike) -> dict:
    """Read and check ``phifilter.json``; ModelError if the folder is not a phifilter model."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no such model folder")
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise ModelError(f"{path}: not a phifilter model folder (no {META_FILE})")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{meta_file}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{meta_file}: not a phifilter model (format is not '{FORMAT}')")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{meta_file}: format version {meta.get('format_version')} is newer than this phifilter "
            f"understands ({FORMAT_VERSION}); upgrade phifilter"
        )
    return meta
