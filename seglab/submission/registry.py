"""The submission-format registry and what every writer is given.

A writer is `writer(predictions, out, context) -> rows written`, registered with
`@WRITERS.register("name")` in its own module (imported by this package's `__init__`).
"""

from __future__ import annotations

from dataclasses import dataclass

from seglab.registry import Registry

WRITERS = Registry("submission format")


@dataclass
class WriteContext:
    classes: list[str]
    cfg: object  # the reference config: data layout, submission.size
    split: str
    kind: object  # the target kind of the decisions (`seglab.kinds`): what a writer reads from them
    palette: bool = False  # png: colour-palette PNGs (mode P) instead of grey index PNGs
