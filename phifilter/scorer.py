"""What every scorer has, and the two things done to any of them: check it, name it.

A scorer (a phifilter model, :class:`~phifilter.foreign.HFScorer`,
:class:`~phifilter.foreign.FastTextScorer`, :class:`~phifilter.ensemble.EnsembleScorer`) has
``edu_score(texts) -> float32``, ``threshold``, and, except phifilter's own models,
``kind``, ``load()`` and ``scoring_identity()``. Column names of scorers follow :data:`NAME`.
"""

from __future__ import annotations

import re

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_member(member) -> None:
    """Load a scorer and check it can score (an EduClassifier: fitted, its embedder's hashes)."""
    if hasattr(member, "check_fitted"):
        member.check_fitted()
    if hasattr(member, "check_embedder"):
        member.check_embedder()
    if hasattr(member, "kind"):  # a foreign scorer or an ensemble: load() is an instance method
        member.load()


def member_identity(member) -> dict:
    """A scorer's ``{"kind", "files", "options"}`` as run records and ensembles name it."""
    own = getattr(member, "scoring_identity", None)
    if own is not None:
        return dict(own())
    from .scoring.model import model_identity

    return {"kind": "phifilter", **model_identity(member)}  # an EduClassifier
