"""Data layouts: each turns a config split into a *source* of samples.

A source is a `Source` (base.py: every question the engine may ask, with the answer a
layout without the feature gives), registered in `SOURCES` (registry.py) under the
`data.format` name; its `options` are its own config section, `data.<format>`. Adding a
layout means writing one module here, registering it, and importing it below.

    base.py            what a source is
    registry.py        SOURCES, the data-format registry
    coco.py            COCO JSON (competition A)
    labelmap.py        image folder + label PNG folder
    polygons.py        per-image polygon JSON (competition B)
    classification.py  imagefolder, csv, maskstatus (competition C)
    combined.py        a fold of a source, a source plus extra labelled sets
"""

from seglab.data.sources import classification, coco, labelmap, polygons  # noqa: F401  (register)
from seglab.data.sources.registry import SOURCES

__all__ = ["SOURCES"]
