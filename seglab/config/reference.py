"""The README's config reference, generated from the schema.

`python -m seglab.config.reference` prints the table; `--update-readme README.md`
rewrites it between the two markers (a test checks the README is current).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

from seglab.config.schema import SECTION_TYPES, Config, plugin_sections


def schema_reference(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf field, for the README table; a
    section with plug-ins (the config's task, data.format) is followed by every registered
    plug-in's own options, under its name."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann not in SECTION_TYPES:
            rows.extend(schema_reference(ann, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        elif isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump(mode="json") for d in default]
        rows.append((key, yaml.safe_dump(default, default_flow_style=True, width=10**6).strip().removesuffix("..."), field.description or ""))
    for name, options in plugin_sections(model).items():
        rows.extend(schema_reference(options, f"{prefix}{name}."))
    return rows


def markdown_reference() -> str:
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, default, desc in schema_reference():
        lines.append(f"| `{key}` | `{default.strip()}` | {desc} |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_readme(path: str | Path) -> None:
    """Replace the README's config table (between the two markers) with the schema's."""
    path = Path(path)
    text = path.read_text()
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{markdown_reference()}{README_END}{tail}")


if __name__ == "__main__":
    if "--update-readme" in sys.argv:
        update_readme(sys.argv[-1])
    else:
        sys.stdout.write(markdown_reference())
