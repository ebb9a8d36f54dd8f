"""mkdocs hook: pull repository files (the data card, the model card) into pages at build time.

A page line ``<!-- include: path/in/repo.md -->`` is replaced by that file's text, so the site
shows the very files that ship with the package and cannot drift from them. Relative links in
an included file point next to it in the repository, not into the site, so they become the
link text plus the file's repository path.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.MULTILINE)
LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)([^)\s]+)\)")


def _included(match: re.Match) -> str:
    path = REPO / match.group(1)
    text = path.read_text(encoding="utf-8")
    folder = path.parent.relative_to(REPO)

    def unlink(m: re.Match) -> str:
        target = (folder / m.group(2)).as_posix()
        label = m.group(1).strip("`")
        return f"`{label}`" if label == Path(target).name else f"{m.group(1)} (`{target}`)"

    # The included file's own title becomes a second-level heading under the page's title.
    text = re.sub(r"^# ", "## ", text, flags=re.MULTILINE)
    return LINK.sub(unlink, text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return INCLUDE.sub(_included, markdown)
