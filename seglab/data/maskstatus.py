"""Competition C's label encoding: 18 classes = mask x gender x age band.

    class = 6 * mask + 3 * gender + age_band
    mask:   0 wear (mask1..mask5), 1 incorrect (incorrect_mask), 2 not worn (normal)
    gender: 0 male, 1 female
    age:    0 below bounds[0], 1 from bounds[0] to bounds[1] - 1, 2 from bounds[1]

The second bound is the knob teams turned: the oldest band held almost only 60-year-olds,
so 59 (or 58) moved the late fifties into it. Person folders are named
`<id>_<gender>_<race>_<age>`, image files `<mask kind>.<ext>`.
"""

from __future__ import annotations

MASK_KINDS = {"mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0, "incorrect_mask": 1, "normal": 2}
MASK_NAMES = ("wear", "incorrect", "not_worn")
GENDERS = {"male": 0, "female": 1}
MAX_AGE = 120  # older is a typo (or a birth year)


def age_band(age: int, bounds: tuple[int, int] = (30, 60)) -> int:
    return int(age >= bounds[0]) + int(age >= bounds[1])


def encode(mask: int, gender: int, band: int) -> int:
    if not (0 <= mask < 3 and 0 <= gender < 2 and 0 <= band < 3):
        raise ValueError(f"mask {mask}, gender {gender}, age band {band} out of range")
    return 6 * mask + 3 * gender + band


def decode(label: int) -> tuple[int, int, int]:
    """class -> (mask, gender, age band)."""
    if not 0 <= label < 18:
        raise ValueError(f"class {label} out of range 0..17")
    return label // 6, (label // 3) % 2, label % 3


def label_of(mask_kind: str, gender: str, age: int, bounds: tuple[int, int] = (30, 60)) -> int:
    """('mask3', 'female', 45) -> 10. Raises ValueError on an unknown kind or gender."""
    if mask_kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {mask_kind!r} (expected {', '.join(MASK_KINDS)})")
    g = gender.strip().lower()
    if g not in GENDERS:
        raise ValueError(f"unknown gender {gender!r} (expected male or female)")
    return encode(MASK_KINDS[mask_kind], GENDERS[g], age_band(int(age), bounds))


def band_names(bounds: tuple[int, int] = (30, 60)) -> tuple[str, str, str]:
    a, b = bounds
    return (f"<{a}", f"{a}-{b - 1}", f">={b}")


def class_names(bounds: tuple[int, int] = (30, 60)) -> list[str]:
    """['wear/male/<30', 'wear/male/30-59', ...] in class-index order."""
    ages = band_names(bounds)
    return [f"{MASK_NAMES[m]}/{g}/{ages[a]}" for m in range(3) for g in GENDERS for a in range(3)]


def parse_person(folder: str) -> tuple[str, str, int]:
    """'000001_female_Asian_45' -> ('000001', 'female', 45)."""
    parts = folder.split("_")
    if len(parts) < 4 or not (parts[-1].isascii() and parts[-1].isdigit()):
        raise ValueError(f"person folder {folder!r} is not <id>_<gender>_<race>_<age>")
    return parts[0], parts[1].lower(), int(parts[-1])


# Each class's mask kind, gender and age band: the metric reports their accuracies too.
FACETS = {
    "mask": tuple(c // 6 for c in range(18)),
    "gender": tuple((c // 3) % 2 for c in range(18)),
    "age": tuple(c % 3 for c in range(18)),
}


def record_value(facet: str, value: int):
    """A facet's value as a data.corrections record writes it (mask: wear/incorrect/not_worn,
    gender: male/female); None for age (a record takes years, which an age band does not tell)."""
    if facet == "mask":
        return MASK_NAMES[value]
    if facet == "gender":
        return list(GENDERS)[value]
    return None
