"""Data layouts: each turns a config split into a *source* of samples.

A source has `name`, `labels`, `has_targets`, `cache_key`, `__len__`, `sample_id(i)`,
`image_path(i)`, `original_size(i)`, `load_image(i)`, `load_target(i)`, `group(i)`
(the sample's natural group for splits, e.g. a person; None when it has none) and
`problems(check_files, deep)` (one line per problem). Its class
`resolve_labels(data_cfg)` gives the natural class list, and `targets` the target forms
it can produce. Adding a layout means writing one module here and registering it.

    coco.py            COCO JSON (competition A)
    labelmap.py        image folder + label PNG folder
    polygons.py        per-image polygon JSON (competition B)
    classification.py  imagefolder, csv, maskstatus (competition C)
    combined.py        a fold of a source, a source plus extra labelled sets
"""

from seglab.registry import Registry

SOURCES = Registry("data format")

from seglab.data.sources import classification, coco, labelmap, polygons  # noqa: E402,F401  (register)

__all__ = ["SOURCES"]
