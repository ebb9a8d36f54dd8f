"""Errors that phifilter raises on purpose.

Every message names the file (or option) at fault and, where there is one, the fix. The CLI
prints `Error: <message>` for these and exits non-zero; anything else is a bug and keeps its
traceback.
"""


class PhifilterError(Exception):
    """Base class: a problem with the user's input, model or environment, not a bug."""


class InputError(PhifilterError):
    """A corpus file or option is unusable: missing, corrupt, wrong schema, wrong type."""


class ModelError(PhifilterError):
    """A model folder or embedder is missing, foreign, tampered with or mismatched."""


class OutputError(PhifilterError):
    """The output location is unusable: same as the input, locked, or not writable."""


class StoreError(PhifilterError):
    """An object store cannot be reached, does not answer in time, refuses the credentials or has
    no such bucket (``location.store_error`` names the URL and the fix; the cause is kept)."""


class OptionError(InputError):
    """Options that cannot go together, or an option value that cannot be read.

    ``option`` names the one at fault (``"--threshold"``), or is None when the fault is the
    combination. The CLI shows these the way click shows its own usage errors (exit status 2):
    ``Invalid value for --threshold: ...``, or the usage line and the message.
    """

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


def error_class(name: str) -> type[PhifilterError]:
    """The error class named ``name``: what crosses a process boundary (a --devices worker, a
    Ray task) is an error's class name and message, since exceptions of every kind do not
    pickle; the parent raises the same class again (an unknown name: PhifilterError)."""
    known = (PhifilterError, InputError, ModelError, OutputError, StoreError, OptionError)
    return {cls.__name__: cls for cls in known}.get(name, PhifilterError)
