"""Defaults that several modules and the CLI share, each written once here (this module imports
nothing, so the CLI can read them without slowing ``phifilter --help``)."""

MAX_LENGTH = 256  # tokens the embedder reads per document (or per chunk)
MAX_CHUNKS = 8  # chunks read per document in the chunk-* document modes
EMBED_BATCH_SIZE = 64  # texts per embedder forward pass
