import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.data.synth.coco import make_coco_dataset


def write_coco(root: Path, name: str, images: list[dict], annotations: list[dict] | None, categories: list[dict],
               write_images: bool = True) -> Path:
    """A COCO file plus plain grey images of the recorded sizes."""
    root.mkdir(parents=True, exist_ok=True)
    if write_images:
        for img in images:
            path = root / img["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((img["height"], img["width"], 3), 128, np.uint8))
    doc = {"images": images, "categories": categories}
    if annotations is not None:
        doc["annotations"] = annotations
    path = root / name
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """The built-in example data, small: shared by the end-to-end tests."""
    root = tmp_path_factory.mktemp("synth")
    make_coco_dataset(root, n_train=12, n_val=6, n_test=4, size=64, seed=0)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    # Pretrained weights: no test reads the user's hub caches or touches the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)


@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL server for the session (tests/servers.py); skipped where initdb/pg_ctl
    or the psycopg2 driver (requirements-postgres.txt, installed by `make extras`) are missing."""
    from tests.servers import postgres_bin, postgres_server

    if postgres_bin() is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not on this machine")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is an extra: make extras")
    with postgres_server() as url:
        yield url
