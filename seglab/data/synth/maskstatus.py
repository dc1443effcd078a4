"""Built-in example data in the competition-C (mask status) layout.

    OUT/train/train.csv                      id,gender,race,age,path
    OUT/train/images/<id>_<gender>_<race>_<age>/{mask1..mask5,incorrect_mask,normal}.jpg
    OUT/eval/info.csv                        ImageID,ans   (ans = 0 placeholders)
    OUT/eval/images/<hash>.jpg
    OUT/eval/answers.csv                     the true classes (synthetic data only, default age bounds)

Each person is a cartoon face whose cues are learnable at 32-64 px: gender is the hair
length (long or short), age is the hair's greyness (steepest around 30 and 60) and the
number of forehead lines, and the mask covers nose and mouth (worn), only the chin
(incorrect) or nothing (not worn). Like the organiser's data, a few people's images are
PNGs and one folder holds a hidden macOS `._mask1.jpg` file that is not an image.
Deterministic for a given seed.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np

from seglab.data.maskstatus import MASK_KINDS, label_of

SKIN = np.array([[224, 187, 160], [198, 150, 120], [160, 110, 80], [241, 205, 180]], np.float32)
HAIR = np.array([[40, 30, 25], [70, 45, 30], [25, 25, 30], [95, 65, 40]], np.float32)
MASK_COLOURS = {"mask1": (235, 235, 235), "mask2": (120, 170, 230), "mask3": (35, 35, 40),
                "mask4": (230, 150, 180), "mask5": (150, 200, 160), "incorrect_mask": None, "normal": None}
# Hair greyness by age: flat inside the bands, steep around 30 and 60.
GREY_AGES, GREY_LEVELS = [18, 29, 31, 57, 61, 80], [0.0, 0.15, 0.4, 0.6, 0.88, 1.0]


def _sample_age(rng: np.random.Generator) -> int:
    band = rng.choice(3, p=[0.42, 0.4, 0.18])
    low, high = ((18, 29), (30, 59), (60, 72))[band]
    return int(rng.integers(low, high + 1))


def _face(rng: np.random.Generator, person: dict, kind: str, size: int) -> np.ndarray:
    s = size
    img = np.empty((s, s, 3), np.float32)
    img[:] = person["background"]
    img += np.linspace(-12, 12, s, dtype=np.float32)[:, None, None]
    cx = s / 2 + rng.uniform(-0.04, 0.04) * s
    cy = s * 0.48 + rng.uniform(-0.04, 0.04) * s
    k = rng.uniform(0.94, 1.06)
    pt = lambda x, y: (int(round(cx + x * s * k)), int(round(cy + y * s * k)))
    ax = lambda a, b: (max(1, int(round(a * s * k))), max(1, int(round(b * s * k))))
    hair = tuple(float(v) for v in person["hair"])
    skin = tuple(float(v) for v in person["skin"])
    if person["gender"] == "female":  # long hair falling behind the face to the bottom of the picture
        cv2.ellipse(img, pt(0, 0.12), ax(0.33, 0.48), 0, 0, 360, hair, -1)
    cv2.ellipse(img, pt(0, -0.1), ax(0.26, 0.22), 0, 180, 360, hair, -1)  # the top of the head
    cv2.ellipse(img, pt(0, 0.02), ax(0.21, 0.27), 0, 0, 360, skin, -1)
    cv2.ellipse(img, pt(0, -0.17), ax(0.2, 0.1), 0, 180, 360, hair, -1)  # fringe
    darker = tuple(float(v) * 0.7 for v in person["skin"])
    for i in range(person["lines"]):  # forehead lines come with age
        y = -0.115 + 0.035 * i
        cv2.line(img, pt(-0.1, y), pt(0.1, y), darker, 1)
    for x in (-0.08, 0.08):
        cv2.circle(img, pt(x, -0.02), max(1, int(0.025 * s)), (20, 20, 20), -1)
    cv2.line(img, pt(0, 0.02), pt(-0.03, 0.1), (90, 50, 40), max(1, int(0.03 * s)))  # nose
    cv2.line(img, pt(-0.06, 0.17), pt(0.06, 0.17), (170, 40, 50), max(1, int(0.025 * s)))  # mouth
    # The colour says nothing about how the mask is worn: only its position does.
    colour = MASK_COLOURS[kind] if kind.startswith("mask") else MASK_COLOURS[f"mask{rng.integers(1, 6)}"]
    if kind.startswith("mask"):  # worn: nose and mouth covered
        cv2.ellipse(img, pt(0, 0.12), ax(0.23, 0.16), 0, 0, 360, colour, -1)
        cv2.line(img, pt(-0.21, 0.05), pt(-0.3, -0.02), colour, 1)
        cv2.line(img, pt(0.21, 0.05), pt(0.3, -0.02), colour, 1)
    elif kind == "incorrect_mask":  # pulled down to the chin: nose and mouth visible
        cv2.ellipse(img, pt(0, 0.29), ax(0.2, 0.075), 0, 0, 360, colour, -1)
        cv2.line(img, pt(-0.19, 0.27), pt(-0.3, 0.1), colour, 1)
        cv2.line(img, pt(0.19, 0.27), pt(0.3, 0.1), colour, 1)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _saturated(rng: np.random.Generator) -> np.ndarray:
    """A coloured background: a grey one could pass for hair and blur the gender cue."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(120, 210), rng.uniform(140, 230)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _person(rng: np.random.Generator, index: int) -> dict:
    age = _sample_age(rng)
    grey = float(np.clip(np.interp(age, GREY_AGES, GREY_LEVELS) + rng.normal(0, 0.04), 0, 1))
    base = HAIR[rng.integers(len(HAIR))]
    return {
        "id": f"{index:06d}", "gender": "female" if rng.random() < 0.55 else "male", "age": age,
        "hair": base * (1 - grey) + np.array([215, 215, 215], np.float32) * grey,
        "skin": SKIN[rng.integers(len(SKIN))] + rng.uniform(-10, 10, 3),
        "background": _saturated(rng),
        "lines": int(np.clip((age - 35) // 10 + rng.integers(-1, 1), 0, 4)),
    }


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")


def make_maskstatus_dataset(out: str | Path, n_train: int = 60, n_eval: int = 24, size: int = 64, seed: int = 0) -> dict[str, Path]:
    """Write `n_train` labelled persons and `n_eval` test persons (7 images each) under `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train):
        p = _person(rng, i + 1)
        folder = f"{p['id']}_{p['gender']}_Asian_{p['age']}"
        ext = ".png" if i % 5 == 4 else ".jpg"
        for kind in MASK_KINDS:
            _write(out / "train" / "images" / folder / f"{kind}{ext}", _face(rng, p, kind, size))
        if i == 1:
            (out / "train" / "images" / folder / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
        rows.append({"id": p["id"], "gender": p["gender"], "race": "Asian", "age": p["age"], "path": folder})
    with open(out / "train" / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "gender", "race", "age", "path"])
        w.writeheader()
        w.writerows(rows)
    answers = {}
    for i in range(n_eval):
        p = _person(rng, 100000 + i)
        for kind in MASK_KINDS:
            name = hashlib.sha1(f"{seed}-{i}-{kind}".encode()).hexdigest()[:40] + ".jpg"
            _write(out / "eval" / "images" / name, _face(rng, p, kind, size))
            answers[name] = label_of(kind, p["gender"], p["age"])
    names = list(answers)
    rng.shuffle(names)
    for file, values in (("info.csv", {n: 0 for n in names}), ("answers.csv", answers)):
        # answers.csv (synthetic data only) holds the true classes, to score a submission offline.
        with open(out / "eval" / file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "ans"])
            w.writerows([n, values[n]] for n in names)
    return {"train": out / "train", "eval": out / "eval"}
