"""Target kinds: what a target is, as a type (base.py has the protocol and the registry).

    base.py          TargetKind, KINDS, target_kind(name)
    dense.py         what class maps and binary masks share
    class_map.py     one class per pixel (multiclass)
    binary_masks.py  C x H x W booleans (multilabel)
    image_class.py   one class per image (classification)

Adding a kind means writing one module here, registering its class in KINDS under the name
its labels carry (`LabelSpec.target`), and importing it below.
"""

from seglab.kinds import binary_masks, class_map, image_class  # noqa: F401  (register)
from seglab.kinds.base import KINDS, TargetKind, target_kind

__all__ = ["KINDS", "TargetKind", "target_kind"]
