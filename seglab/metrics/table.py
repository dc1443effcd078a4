"""The console table every task prints after a validation: one row per class, one column
per per-class score, then a summary line."""

from __future__ import annotations


def per_class_table(columns: dict[str, dict], summary: str, title: str = "") -> str:
    """`columns`: header -> {class: value}; floats print with 4 decimals, None as "-", ints as counts."""
    names = list(next(iter(columns.values())))
    width = max(12, *(len(n) for n in names))

    def cell(value) -> str:
        if value is None:
            return f"{'-':>5}  "
        return f"{value:7d}" if isinstance(value, int) else f"{value:7.4f}"

    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{header:>7}" for header in columns))
    lines += [f"{name:<{width}}  " + "  ".join(cell(col.get(name)) for col in columns.values()) for name in names]
    lines.append(summary)
    return "\n".join(lines)
