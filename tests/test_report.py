import importlib.util
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from seglab.errors import SeglabError
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
        "task: multiclass\nmodel:\n  arch: unet\n  encoder: resnet34\nnote: '<script>alert(1)</script> & co'\n")
    (run / "labels.json").write_text(json.dumps(
        {"target": "class_map", "classes": CLASSES, "ignore_index": 255}))
    per_class = {"Background": 0.9, "cat": None, "dog": 0.4}
    (run / "metrics.json").write_text(json.dumps(
        {"epoch": 1, "step": 20, "monitor": "mIoU", "mIoU": 0.65, "pixel_accuracy": 0.9, "mean_class_accuracy": 0.7,
         "fwIoU": 0.85, "per_class_iou": per_class, "val_loss": 0.6}))
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
    assert len(found.src) >= 8
    assert len(found.src) == len(set(found.src))  # each figure once (the epoch's own confusion matrix is not repeated)
    for ref in [r for r in found.src + found.href if not r.startswith("#")]:
        assert not ref.startswith(("http:", "https:", "//", "/", "..")), ref
        assert (index.parent / unquote(ref)).is_file(), ref
    # The latest epoch is chosen by number, not by string order or mtime.
    assert all("epoch_002" not in ref for ref in found.src)
    assert sum("figures/epoch_010_worst_" in ref for ref in found.src) == 3
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "exp&lt;1&gt;" in page and "<link" not in page
    assert "0.6500" in page and "absent" in page
    best = best_table(page)
    assert best["monitored metric"] == "mIoU" and best["mIoU"] == "0.6500" and list(best)[3] == "mIoU"
    assert "task: multiclass" in page


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def tables(page: str) -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


def best_table(page: str) -> dict[str, str]:
    return {row[0]: row[1] for row in tables(page)[0]}


# A multilabel (Dice) and a classification (macro F1) run, as their trainers write them.
DICE = {
    "config": "task: multilabel\nmodel: {arch: Unet, encoder: resnet34}\n",
    "labels": {"classes": ["finger-1", "Radius"], "ignore_index": 255, "target": "binary_masks"},
    "metrics": {"epoch": 1, "step": 8, "monitor": "dice", "dice": 0.8125, "images": 6,
                "per_class_dice": {"finger-1": 0.9, "Radius": 0.725}, "val_loss": 0.25},
    "history": [{"epoch": e, "step": 4 * (e + 1), "train_loss": 0.5, "val_loss": 0.3, "lr": 1e-3, "dice": 0.75 + 0.0625 * e,
                 "per_class_dice": {"finger-1": 0.9, "Radius": 0.725}, "images": 6} for e in range(2)],
}
F1 = {
    "config": "task: classification\nmodel: {arch: classifier, encoder: resnet18}\n",
    "labels": {"classes": ["cat", "dog"], "ignore_index": 255, "target": "class"},
    "metrics": {"epoch": 2, "step": 12, "monitor": "macro_f1", "macro_f1": 0.4375, "accuracy": 0.625, "mean_class_accuracy": 0.5,
                "per_class_f1": {"cat": 0.75, "dog": 0.125}, "per_class_precision": {"cat": 0.6, "dog": 1.0},
                "per_class_recall": {"cat": 1.0, "dog": 0.0625}, "support": {"cat": 3, "dog": 16}, "val_loss": 0.9},
    "history": [{"epoch": e, "step": 4 * (e + 1), "train_loss": 1.0, "val_loss": 0.9, "lr": 1e-3, "macro_f1": 0.25 + 0.09375 * e,
                 "accuracy": 0.625, "per_class_f1": {"cat": 0.75, "dog": 0.125}, "confusion_matrix": [[3, 0], [15 - e, 1 + e]]}
                for e in range(3)],
}


@pytest.mark.parametrize("run, monitor, value, per_class_header, cm", [
    (DICE, "dice", "0.8125", ["class", "dice"], False),
    (F1, "macro_f1", "0.4375", ["class", "f1", "precision", "recall"], True),
], ids=["dice", "macro_f1"])
def test_report_shows_each_tasks_own_metric(tmp_path, run, monitor, value, per_class_header, cm):
    folder = tmp_path / monitor
    folder.mkdir()
    (folder / "config.yaml").write_text(run["config"])
    (folder / "labels.json").write_text(json.dumps(run["labels"]))
    (folder / "metrics.json").write_text(json.dumps(run["metrics"]))
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in run["history"]))
    index = write_report(folder)
    page = index.read_text(encoding="utf-8")
    best = best_table(page)
    assert best["monitored metric"] == monitor
    assert list(best)[3] == monitor and best[monitor] == value  # after monitor, epoch, step: the monitored score
    assert best["epoch"] == str(run["metrics"]["epoch"])
    assert "mIoU" not in page and "images" not in best
    per_class = tables(page)[1]
    assert per_class[0] == per_class_header
    assert [row[0] for row in per_class[1:]] == run["labels"]["classes"]
    what = per_class_header[1]
    assert (index.parent / f"per_class_{what}.png").is_file() and (index.parent / "learning_curves.png").is_file()
    assert (index.parent / "confusion_matrix.png").is_file() == cm  # only classification keeps a confusion matrix
    assert ("confusion matrix: not available" in page) != cm
    for ref in links(index).src:
        assert (index.parent / unquote(ref)).is_file(), ref


def test_report_folder_stands_alone_with_contents_and_worst_classes_first(tmp_path):
    run = make_run(tmp_path)
    index = write_report(run)
    moved = tmp_path / "mailed" / "report"
    shutil.copytree(index.parent, moved)
    shutil.rmtree(run)  # the run folder is gone: the report still has every picture
    found = links(moved / "index.html")
    for ref in found.src:
        assert (moved / unquote(ref)).is_file(), ref
    anchors = [ref for ref in found.href if ref.startswith("#")]
    assert anchors == ["#best", "#per-class", "#curves", "#confusion", "#pictures", "#config"]
    page = (moved / "index.html").read_text(encoding="utf-8")
    for anchor in anchors:
        assert f'id="{anchor[1:]}"' in page
    # dog (IoU 0.4) before cat (absent from the ground truth: no score), whatever the alphabet says
    assert page.index("<h4>dog (score 0.4000)</h4>") < page.index("<h4>cat</h4>")


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(F1["metrics"]))  # metrics alone do not make a run
    with pytest.raises(SeglabError, match=r"not a run folder \(no config.yaml\)"):
        write_report(tmp_path)
    with pytest.raises(SeglabError, match="not a run folder"):
        write_report(tmp_path / "missing")
    assert not (tmp_path / "report").exists()


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
    assert len(images) >= 8
    assert [src for src, width in images if not width > 0] == []
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
