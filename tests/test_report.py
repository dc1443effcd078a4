import importlib.util
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from seglab.report import write_report
from seglab.visualization.figures import save_png

CLASSES = ["Background", "cat", "dog"]


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.href = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.src.append(attrs["src"])
        if "href" in attrs:
            self.href.append(attrs["href"])


def links(index: Path) -> Links:
    parser = Links()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser


def make_run(root: Path) -> Path:
    """A run folder as the trainer writes it, with two viz epochs."""
    run = root / "exp<1>"
    run.mkdir()
    (run / "config.yaml").write_text(
        "model:\n  arch: unet\n  encoder: resnet34\nnote: '<script>alert(1)</script> & co'\n")
    (run / "labels.json").write_text(json.dumps(
        {"task": "multiclass", "classes": CLASSES, "ignore_index": 255}))
    per_class = {"Background": 0.9, "cat": None, "dog": 0.4}
    (run / "metrics.json").write_text(json.dumps(
        {"epoch": 1, "step": 20, "mIoU": 0.65, "pixel_accuracy": 0.9, "mean_class_accuracy": 0.7,
         "fwIoU": 0.85, "per_class_iou": per_class}))
    lines = [json.dumps({"epoch": e, "step": 10 * (e + 1), "train_loss": 1.0 / (e + 1),
                         "val_loss": 1.2 / (e + 1), "lr": 1e-3, "mIoU": 0.5 + 0.15 * e,
                         "per_class_iou": per_class,
                         "confusion_matrix": [[50, 2, 1], [0, 0, 0], [3, 1, 9 + e]]})
             for e in range(2)]
    (run / "history.jsonl").write_text("\n".join(lines) + '\n{"epoch": 2, "ste')  # torn last line
    img = np.full((20, 30, 3), 200, np.uint8)
    for epoch in ("epoch_002", "epoch_010"):
        for name in ("sample_a_1.jpg.png", "per_class_a_1.jpg.png", "worst_cat_1.png",
                     "worst_dog_1.png", "worst_dog_2.png", "confusion_matrix.png"):
            save_png(img, run / "viz" / epoch / name)
    return run


def test_report_references_only_existing_files_and_escapes(tmp_path):
    run = make_run(tmp_path)
    index = write_report(run)
    assert index == run / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    found = links(index)
    assert len(found.src) >= 9
    for ref in found.src + found.href:
        assert not ref.startswith(("http:", "https:", "//", "/")), ref
        assert (index.parent / unquote(ref)).is_file(), ref
    # The latest epoch is chosen by number, not by string order or mtime.
    assert all("epoch_002" not in ref for ref in found.src)
    assert sum("viz/epoch_010/worst_" in ref for ref in found.src) == 3
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "exp&lt;1&gt;" in page and "<link" not in page
    assert "0.6500" in page and "absent" in page


def test_report_with_missing_pieces_says_not_available(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "config.yaml").write_text("model: {arch: fcn8s}\n")
    (run / "metrics.json").write_text("{not json")
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("not available") >= 5
    assert "<img" not in page and "fcn8s" in page


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_missing() -> str | None:
    if not shutil.which("chromium"):
        return "no chromium on PATH (apt-get install -y chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (apt-get install -y chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_report_renders_in_headless_chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    index = write_report(make_run(tmp_path))
    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(index.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert len(images) >= 9
    assert [src for src, width in images if not width > 0] == []
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
