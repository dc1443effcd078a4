"""The data-format registry: `data.format` names one of its entries, a `Source` subclass
(`seglab.data.sources.base`). A layout registers itself with `@SOURCES.register("name")`
in its own module; the built-in ones are imported by this package's `__init__`, so the
registry is complete wherever it is imported from (the config schema reads it)."""

from seglab.registry import Registry

SOURCES = Registry("data format")
