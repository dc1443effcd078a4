"""What a source is: one split of one data layout, as the dataset reads it.

Every method the engine may call is declared here, with the answer a layout without the
feature gives (no groups, no object ids, no annotations, ...): the engine asks, it never
probes. A layout overrides what it has and registers its class in `SOURCES`
(`seglab.data.sources.registry`).

Class attributes say what the layout is: `targets`, the target kinds it can produce
(`seglab.kinds`); `options`, its config section `data.<format>` (a pydantic model, or
None); `unset_split_is_everything`, whether an unset split means every sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglab.data.corrections import Applied
from seglab.data.labels import LabelSpec
from seglab.errors import ConfigError


class Source:
    targets: tuple[str, ...] = ()
    options = None  # a pydantic model class: the layout's `data.<format>` section
    unset_split_is_everything: bool = False

    name: str = ""
    labels: LabelSpec | None = None
    has_targets: bool = False
    cache_key: tuple = ()  # what decides its targets' content (the resized-image cache keys on it)
    applied: Applied  # the data.corrections records this split took

    # ------------------------------------------------------------ the layout

    @classmethod
    def resolve_labels(cls, data_cfg) -> LabelSpec:
        """The layout's natural class list (before the task adapts it)."""
        raise NotImplementedError

    @classmethod
    def options_in(cls, data_cfg):
        """This layout's options in a data config: its `data.<format>` section (the defaults
        when the config is another layout's: an extra training set read beside it)."""
        found = data_cfg.format_options
        return found if isinstance(found, cls.options) else cls.options()

    @classmethod
    def check_target(cls, target: str, task_name: str, fmt: str) -> None:
        """A ConfigError when this layout cannot give the targets a task trains on."""
        if target not in cls.targets:
            raise ConfigError(f"data.format: {fmt!r} gives {' or '.join(cls.targets)} targets; "
                              f"task {task_name} trains on {target} (choose another task or data format)")

    @classmethod
    def notes(cls, data_cfg) -> list[str]:
        """What `seglab data validate` says about how this layout's labels are read (a void
        value, ...), besides the problems."""
        return []

    # ------------------------------------------------------------ samples

    def __len__(self) -> int:
        raise NotImplementedError

    def sample_id(self, i: int) -> str:
        raise NotImplementedError

    def image_path(self, i: int) -> Path:
        raise NotImplementedError

    def original_size(self, i: int) -> tuple[int, int]:
        raise NotImplementedError

    def load_image(self, i: int) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        raise NotImplementedError

    def load_target(self, i: int):
        """The target in the form `labels.target` names (a class map, C x H x W booleans, a class index)."""
        raise NotImplementedError

    def group(self, i: int) -> str | None:
        """The sample's natural group for splits (a person, an ID folder); None when it has none."""
        return None

    def target_stamp(self, i: int) -> str:
        """What identifies the content of the sample's label file (the resized-image cache keys
        on it); "" when the source's cache_key already covers it."""
        return ""

    def load_instances(self, i: int) -> np.ndarray | None:
        """Object ids [H, W] matching the class map (0 = none), for copy-paste by object; None
        when the layout has no objects (label maps)."""
        return None

    def classes_present(self, i: int) -> set[int]:
        """The classes sample i holds (ignore_index included when it has ignored parts); a
        layout that can tell without decoding its target overrides this."""
        return self.labels.kind.classes_in(self.load_target(i), self.labels)

    def annotation_masks(self, i: int) -> list[tuple[int | str, int, np.ndarray]] | None:
        """(annotation key, class, [H, W] boolean mask) of each of sample i's annotations, after
        corrections (what `data corrections-template` judges one by one); None when the layout
        has no annotations to name (label maps, image classes)."""
        return None

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        """Every problem of the split, one line each (`deep`: decode every image fully)."""
        return []
