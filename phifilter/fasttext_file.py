"""Check a fastText ``.bin`` file's structure against its length before fastText's loader sees it.

fastText's C++ loader trusts every size it reads: a header whose bucket count exceeds the
matrix it describes makes prediction index past the matrix (the process dies with SIGSEGV),
and a truncated file is read as if the missing floats were zeros (every document gets the
same score). So before :func:`fasttext.load_model` runs, :func:`check_fasttext_file` walks the
file's layout (nothing is allocated from a size read in the file):

    magic (int32 793712314), version (int32 11 or 12)
    args: 12 int32 (dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn,
          maxn, lrUpdateRate) and one float64 (t)
    dictionary: size, nwords, nlabels (int32), ntokens, pruneidx_size (int64), then ``size``
          entries (a NUL-terminated word, an int64 count, an int8 type: 0 word, 1 label),
          then ``pruneidx_size`` pairs of int32
    input matrix: a bool (quantized), then dense (rows, cols int64, rows x cols float32) or
          quantized (qnorm bool, rows, cols int64, codesize int32, the codes, a product
          quantizer, and with qnorm the norm codes and a second quantizer)
    output matrix: a bool (quantized), then the same

and requires a supervised model whose matrices have the shapes the header implies (input:
``nwords + bucket`` rows, or ``nwords + pruneidx_size`` for a pruned quantized model;
``dim`` columns; output: ``nlabels`` rows), whose dictionary counts agree, and whose layout
ends exactly at the file's last byte. Any other file is one :class:`ModelError` naming it.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from .errors import ModelError

MAGIC = 793712314
VERSIONS = (11, 12)
SUPERVISED = 3  # fastText's model_name::sup
KSUB = 256  # centroids per product-quantizer sub-space (8 bits)
ARG_NAMES = ("dim", "ws", "epoch", "minCount", "neg", "wordNgrams", "loss", "model", "bucket", "minn", "maxn",
             "lrUpdateRate")


class _Reader:
    """Reads little-endian fields from a memory map, refusing to read past its end."""

    def __init__(self, data, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self.path}: not a valid fastText model ({why}); the file is damaged or was "
                          "crafted: retrain or restore the model folder")

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.fail(f"it ends at byte {len(self.data)}, inside its header at byte {self.pos}")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def skip(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or self.pos + nbytes > len(self.data):
            raise self.fail(f"{what} needs {nbytes} bytes from byte {self.pos}, the file has {len(self.data)}")
        self.pos += nbytes

    def word(self) -> None:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.fail(f"a dictionary word at byte {self.pos} has no end")
        self.pos = end + 1


def _dense(r: _Reader, what: str) -> tuple[int, int]:
    rows, cols = r.take("<qq")
    if rows < 0 or cols <= 0:
        raise r.fail(f"{what} is {rows} x {cols}")
    r.skip(rows * cols * 4, f"the {what} ({rows} x {cols} floats)")
    return rows, cols


def _quantizer(r: _Reader, what: str) -> int:
    dim, nsubq, dsub, lastdsub = r.take("<iiii")
    if dim <= 0 or nsubq <= 0 or dsub <= 0 or lastdsub <= 0:
        raise r.fail(f"the {what}'s quantizer is {dim}/{nsubq}/{dsub}/{lastdsub}")
    r.skip(dim * KSUB * 4, f"the {what}'s centroids")
    return nsubq


def _quantized(r: _Reader, what: str) -> tuple[int, int]:
    qnorm = r.take("<?")
    rows, cols, codesize = r.take("<qqi")
    if rows < 0 or cols <= 0 or codesize < 0:
        raise r.fail(f"{what} is {rows} x {cols} with {codesize} codes")
    r.skip(codesize, f"the {what}'s codes")
    nsubq = _quantizer(r, what)
    if codesize != rows * nsubq:
        raise r.fail(f"the {what} has {codesize} codes for {rows} rows of {nsubq} sub-quantizers")
    if qnorm:
        r.skip(rows, f"the {what}'s norm codes")
        _quantizer(r, what + " norm")
    return rows, cols


def _matrix(r: _Reader, what: str) -> tuple[int, int, bool]:
    quantized = r.take("<?")
    rows, cols = (_quantized if quantized else _dense)(r, what)
    return rows, cols, quantized


def _dictionary(r: _Reader) -> dict:
    size, nwords, nlabels = r.take("<iii")
    ntokens, pruneidx_size = r.take("<qq")
    if min(size, nwords, nlabels, ntokens) < 0 or nwords + nlabels != size or pruneidx_size < -1:
        raise r.fail(f"dictionary of {size} entries, {nwords} words, {nlabels} labels, pruned {pruneidx_size}")
    kinds = [0, 0]
    for _ in range(size):
        r.word()
        _count, kind = r.take("<qb")
        if kind not in (0, 1):
            raise r.fail(f"dictionary entry type {kind}")
        kinds[kind] += 1
    if kinds != [nwords, nlabels]:
        raise r.fail(f"dictionary holds {kinds[0]} words and {kinds[1]} labels, its header says {nwords} and {nlabels}")
    r.skip(max(pruneidx_size, 0) * 8, "the pruned n-gram index")
    return {"nwords": nwords, "nlabels": nlabels, "pruneidx_size": pruneidx_size}


def check_fasttext_file(path) -> dict:
    """The header fields of the supervised fastText model at ``path``; ModelError unless its
    layout is consistent and fills the file exactly (see the module docstring)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if path.stat().st_size == 0:
                raise ModelError(f"{path}: not a valid fastText model (the file is empty); retrain or restore it")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _walk(_Reader(data, path))
    except OSError as e:
        raise ModelError(f"{path}: cannot read the fastText model ({e})") from None


def _walk(r: _Reader) -> dict:
    magic, version = r.take("<ii")
    if magic != MAGIC or version not in VERSIONS:
        raise r.fail(f"magic {magic}, version {version}")
    args = dict(zip(ARG_NAMES, r.take("<" + "i" * len(ARG_NAMES))))
    r.take("<d")
    if args["model"] != SUPERVISED:
        raise r.fail(f"model kind {args['model']}, phifilter reads supervised models only")
    if args["dim"] <= 0 or args["bucket"] < 0 or args["wordNgrams"] < 1 or min(args["minn"], args["maxn"]) < 0:
        raise r.fail(f"dim {args['dim']}, bucket {args['bucket']}, wordNgrams {args['wordNgrams']}")
    header = {**args, **_dictionary(r)}
    rows, cols, quantized = _matrix(r, "input matrix")
    pruned = header["pruneidx_size"] >= 0
    if pruned and not quantized:
        raise r.fail("a pruned dictionary with a dense input matrix")
    expected = header["nwords"] + (header["pruneidx_size"] if pruned else header["bucket"])
    if rows != expected or cols != args["dim"]:
        raise r.fail(f"input matrix is {rows} x {cols}, the header implies {expected} x {args['dim']} "
                     f"({header['nwords']} words + {'pruned n-grams' if pruned else 'bucket ' + str(header['bucket'])})")
    rows, cols, _ = _matrix(r, "output matrix")
    if rows != header["nlabels"] or cols != args["dim"]:
        raise r.fail(f"output matrix is {rows} x {cols}, the header implies {header['nlabels']} x {args['dim']}")
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes after the model's end at byte {r.pos}")
    return header
