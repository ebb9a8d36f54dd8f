"""Figures about the bundled model in the docs come from its card: check them, or rewrite them.

A figure in README.md, docs/ or a notebook is written followed by a marker naming the card
field it shows, e.g. ``threshold 0.438<!--card:threshold-->`` or ``2,371<!--card:rows-->``
(the marker is invisible in rendered Markdown). ``python docs/card_figures.py`` rewrites every
marked figure from ``phifilter/models/default/phifilter.json`` (keeping its number of decimals);
``--check`` lists the ones that differ and exits 1 (``tests/test_docs.py`` runs the check).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
META = REPO / "phifilter" / "models" / "default" / "phifilter.json"
FILES = ["README.md", "docs/*.md", "docs/howto/*.md", "notebooks/*.ipynb"]
MARKED = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)<!--card:([A-Za-z0-9_.%]+)-->")


def card_values(meta: dict) -> dict[str, float]:
    """Every field a marker may name -> its value (``%`` keys: percentages)."""
    m = meta.get("metrics") or {}
    td = meta.get("training_data") or {}
    parts = m.get("parts") or {}
    cascade = parts.get("cascade") or {}
    out = {"threshold": meta["threshold"], "rows": td.get("rows"), "positives": td.get("positives"),
           "cv_folds": m.get("cv_folds")}
    for key in ("roc_auc", "f1", "precision", "recall"):
        short = "auc" if key == "roc_auc" else key
        out[short] = (m.get("overall") or {}).get(key)
        for domain, fig in (m.get("per_domain") or {}).items():
            out[f"{short}.{domain}"] = fig.get(key)
            out[f"n.{domain}"] = fig.get("n")
    for name in ("lexical", "embedding", "combined"):
        out[f"auc.{name}"] = (parts.get(name) or {}).get("roc_auc")
    for key, field in (("embedded%", "share_embedded"), ("agreement%", "agreement"), ("novel%", "share_novel")):
        if cascade.get(field) is not None:
            out[key] = 100 * cascade[field]
    nov = (meta.get("cascade") or {}).get("novelty") or {}
    if nov:
        out["novelty_threshold%"] = 100 * nov["threshold"]
    return {k: v for k, v in out.items() if v is not None}


def render(value: float, written: str) -> str:
    """``value`` written like ``written``: the same decimals, thousands separators if it had them."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    text = f"{value:,.{decimals}f}" if "," in written or (decimals == 0 and abs(value) >= 1000) else f"{value:.{decimals}f}"
    return text


def files() -> list[Path]:
    return sorted({p for pattern in FILES for p in REPO.glob(pattern)})


def differences(meta: dict | None = None) -> list[str]:
    """'file: written <!--card:key--> but the card says X' for each marked figure that differs."""
    values = card_values(meta or json.loads(META.read_text()))
    out = []
    for path in files():
        for match in MARKED.finditer(path.read_text(encoding="utf-8")):
            written, key = match.groups()
            if key not in values:
                out.append(f"{path.relative_to(REPO)}: unknown card field {key!r}")
            elif render(values[key], written) != written:
                out.append(f"{path.relative_to(REPO)}: {written} <!--card:{key}--> but the card says "
                           f"{render(values[key], written)}")
    return out


def rewrite(meta: dict | None = None) -> int:
    values = card_values(meta or json.loads(META.read_text()))
    changed = 0
    for path in files():
        text = path.read_text(encoding="utf-8")
        new = MARKED.sub(lambda m: (render(values[m.group(2)], m.group(1)) if m.group(2) in values else m.group(1))
                         + f"<!--card:{m.group(2)}-->", text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    return changed


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        diffs = differences()
        print("\n".join(diffs) or "every marked figure matches the card")
        sys.exit(1 if diffs else 0)
    print(f"rewrote {rewrite()} file(s)")
