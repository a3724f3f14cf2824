"""Plain-text and Markdown tables for the analysis reports, and the report files the benchmarks write."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    """Right-aligned numbers, left-aligned text; ``markdown=True`` gives a GitHub table."""
    cells: List[List[str]] = [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False
               for i in range(len(headers))]
    if markdown:
        sep = ["---:" if n else "---" for n in numeric]
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return "\n".join([rule, line(headers), rule, *[line(row) for row in cells], rule])


def write_section(path: Path, key: str, body: str, title: str = "Classification results") -> None:
    """Replace (or append) the section ``key`` of a report made of ``<!-- benchmark:KEY -->`` blocks, so each
    benchmark rewrites its own results and keeps the others' (a new report starts with ``# title``)."""
    begin, end = f"<!-- benchmark:{key} -->", f"<!-- /benchmark:{key} -->"
    text = path.read_text() if path.is_file() else f"# {title}\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
