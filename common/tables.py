"""The one table formatter: aligned plain text for terminals, or GitHub markdown for reports."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    if markdown:
        lines = [f"| {' | '.join(r)} |" for r in cells]
        lines.insert(1, "|" + "---|" * len(header))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def few(names: Sequence[str], shown: int = 3) -> str:
    """'a, b, c, ... (12 in all)': a list named by its first entries and its length."""
    names = list(names)
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")
