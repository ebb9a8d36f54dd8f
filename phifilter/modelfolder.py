"""Model-folder I/O: read and check ``phifilter.json``, load and write the part files with their SHA-256.

A model folder is data, not code. Every part file is recorded in ``phifilter.json`` under
``files`` with its SHA-256, and loading refuses a file whose hash differs. Heads and
calibrations are skops archives holding only trusted types; the lexical scorer is a fastText
binary read by fastText itself (no pickle anywhere). Writing is atomic: the folder is built
under a hidden temporary name and renamed into place, so a killed save leaves the old model.

This is the only module that touches a model folder's files, so every reader (the classifier,
``info``, ``report``) sees the same checks.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Callable

from .hashing import sha256_file
from .errors import ModelError

FORMAT = "phifilter-model"
# 2: head, doc_mode, calibration; 3: features, ridge/svr heads; 4: scorers, combiner, cascade.
FORMAT_VERSION = 4
META_FILE = "phifilter.json"
CARD_FILE = "README.md"
HEAD_FILE = "forest.skops"  # the embedding head, of any kind; the file name is format 1's (every head was a forest)
CALIBRATION_FILE = "calibration.skops"
# Types a model folder may contain beyond the ones skops trusts by default. Anything else in a
# head or calibration file is refused at load time, so a crafted file cannot run code.
# (LogisticRegression, StandardScaler, Pipeline and IsotonicRegression are trusted by skops.)
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


def default_model_path() -> Path:
    """The bundled default model folder (trained on the shipped seed set)."""
    return Path(__file__).resolve().parent / "models" / "default"


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("phifilter", "scikit-learn", "numpy", "skops", "torch", "sentence-transformers", "fasttext-numpy2-wheel"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def read_model_meta(path: str | os.PathLike) -> dict:
    """Read and check ``phifilter.json``; ModelError if the folder is not a phifilter model.
    A URL is read from a cached local copy (``location.local_folder``)."""
    from .location import local_folder

    path = local_folder(path)
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
    from .modelmeta import check_model_meta

    check_model_meta(meta, meta_file)  # every field's type and range, before anything uses one
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{meta_file}: format version {meta.get('format_version')} is newer than this phifilter "
            f"understands ({FORMAT_VERSION}); upgrade phifilter"
        )
    return meta


def part_path(folder: Path, name) -> Path:
    """``folder / name`` for a part file named in ``phifilter.json``, checked before anything opens
    it: a plain file name (no folder, no ``..``), and, symbolic links resolved, inside the folder."""
    folder = Path(folder)
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
            or name != name.strip()):
        raise ModelError(f"{folder / META_FILE}: part file name {name!r} is not a plain file name inside the "
                         "model folder; the folder was edited by hand or crafted (retrain or restore it)")
    file = folder / name
    try:
        inside = file.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop
        inside = False
    if not inside:
        raise ModelError(f"{file}: the part file leads outside the model folder {folder}; refusing to read it "
                         "(copy the real file into the folder)")
    return file


def checked_file(folder: Path, meta: dict, name: str) -> Path:
    """The path of part file ``name`` after checking it exists and matches its recorded SHA-256
    (its name is checked before the file is opened: :func:`part_path`)."""
    file = part_path(folder, name)
    if not file.is_file():
        raise ModelError(f"{folder}: model folder has no {name}")
    recorded = (meta.get("files") or {}).get(name)
    if recorded != sha256_file(file):
        raise ModelError(
            f"{file}: SHA-256 does not match the one recorded in {META_FILE}; "
            "the model folder was modified after it was saved, refusing to load it"
        )
    return file


def load_skops(folder: Path, meta: dict, name: str):
    """Load one skops file of a model folder after checking its hash and the types it holds."""
    import skops.io as sio

    file = checked_file(folder, meta, name)
    try:
        untrusted = sio.get_untrusted_types(file=file)
    except Exception as e:
        raise ModelError(f"{file}: not a skops file ({e})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelError(f"{file}: contains untrusted types {', '.join(refused)}; refusing to load it")
    return sio.load(file, trusted=list(untrusted))


def dump_skops(estimator, file: Path) -> None:
    """Write ``estimator`` with skops so that the same estimator always gives the same bytes."""
    import skops.io as sio

    sio.dump(estimator, file)
    make_zip_reproducible(file)


# What phifilter.json records about its writing, not about the model: left out of the model's id,
# so the same model written twice (another day, other package versions) is the same model.
NOT_IDENTITY = ("created", "versions")


def models_id(meta: dict) -> str:
    """Identifies a scoring model across processes (checkpoint keys, run records): its whole
    ``phifilter.json`` but when and with what it was written. The part files enter through their
    hashes in ``files``; the combiner, cascade band, score map and options live in the JSON
    itself, so a model whose parts stayed and whose JSON changed is another model."""
    kept = {k: v for k, v in meta.items() if k not in NOT_IDENTITY}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def write_model_folder(path: str | os.PathLike, write_parts: Callable[[Path], None], meta: dict,
                       card: str | None = None) -> Path:
    """Write a model folder atomically (a temporary folder renamed into place; on an object
    store built in a local folder, then every file published whole, ``phifilter.json`` last, so
    a reader sees the new parts before the new metadata that names their SHA-256, and part
    files of an earlier model it lacks deleted).

    ``write_parts(tmp)`` writes the part files into the temporary folder; their SHA-256 are
    recorded in ``meta['files']`` (every file but the card and ``phifilter.json``), then
    ``phifilter.json`` and the card are written.
    """
    from .atomic import replace_folder
    from .location import as_location, store_of

    path = as_location(path)

    def fill(tmp: Path) -> None:
        write_parts(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.name not in (META_FILE, CARD_FILE))
        listed = dict(meta)
        order = [k for k in listed.get("files") or {} if k in files] + [f for f in files if f not in (listed.get("files") or {})]
        listed["files"] = {name: sha256_file(tmp / name) for name in order}
        (tmp / META_FILE).write_text(json.dumps(listed, indent=2, sort_keys=False) + "\n")
        if card:
            (tmp / CARD_FILE).write_text(card)

    ours = lambda p: p.name in (HEAD_FILE, CALIBRATION_FILE, CARD_FILE) or p.name.startswith("lexical")  # noqa: E731
    with store_of(path).staged_folder(path, last=(META_FILE,), ours=ours) as folder:
        replace_folder(folder, fill)
    return path


def make_zip_reproducible(path: Path) -> None:
    """Re-pack a skops archive so the same estimator always gives the same bytes (and hash).

    skops names array files and memo keys after Python ``id()`` values, and zip entries carry
    the time of writing; both change from run to run. Files are renamed in order of first
    reference in ``schema.json`` and written with a fixed timestamp.
    """
    import re
    import zipfile

    from .atomic import write_atomic

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

    def repack(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as dst:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                dst.writestr(info, files[name], compresslevel=6)

    write_atomic(path, repack)
