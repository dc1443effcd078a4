"""The pretrained-weights caches as a user manages them: what is cached (`seglab weights
list`), fetching a tag's file (`download`), and putting a file obtained elsewhere where
the hub loaders look for it (`import`): keys converted to the library's layout, checked
tensor by tensor against the encoder's, written in the cache's own layout.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import torch

from seglab.errors import CheckpointError
from seglab.models.pretrained import (
    TORCHVISION_ENCODERS,
    HubFile,
    PretrainedSpec,
    hf_cache_dir,
    torch_checkpoints_dir,
)
from seglab.models.weights import read_state_dict

WEIGHT_FILES = (".safetensors", ".bin", ".pth", ".pt")
COMMIT = re.compile(r"[0-9a-f]{40}")


# ------------------------------------------------------------------ import


def reference_state_dict(spec: PretrainedSpec) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensors (shapes only, on the meta device) the library's loader expects in the
    file, and the key prefixes it may lack (a classifier the encoder drops)."""
    ref = spec.ref
    with torch.device("meta"):
        if ref.family == "smp":
            from segmentation_models_pytorch.encoders import get_encoder

            return get_encoder(ref.name, weights=None).state_dict(), ()  # smp loads it strictly
        if ref.family == "timm":
            import timm

            model = timm.create_model(spec.timm_name, pretrained=False)
            head = model.pretrained_cfg.get("classifier") or "fc"
            return model.state_dict(), tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head))
        import torchvision

        # The classic models take VGG's features alone too (SegNet drops the classifier).
        return torchvision.models.get_model(ref.name, weights=None).state_dict(), ("classifier.",)


def convert_keys(state_dict: dict[str, torch.Tensor], target: dict) -> dict[str, torch.Tensor]:
    """Key names brought to the target's layout: a wrapper prefix removed (`module.`,
    `model.`, a seglab run's `model.net.encoder.`, smp's tu- `model.`) or a missing one added
    (a torchvision `features`-only dict), whichever makes the most keys match."""
    keys = set(target)
    votes: Counter = Counter()
    for key in state_dict:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in keys:
                votes[("strip", ".".join(parts[:i]))] += 1
                break
        else:
            for t in keys:
                if t.endswith("." + key):
                    votes[("add", t[: -len(key) - 1])] += 1
                    break
    if not votes:
        return dict(state_dict)
    (how, prefix), _ = max(votes.items(), key=lambda item: (item[1], -len(item[0][1])))
    if how == "add":
        return {f"{prefix}.{k}": v for k, v in state_dict.items()}
    if not prefix:
        return dict(state_dict)
    return {k[len(prefix) + 1:]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}


def check_against(converted: dict, target: dict, optional: tuple[str, ...], source: str, encoder: str) -> dict:
    """The file's tensors that the encoder has, after checking every shape; refused with
    the first mismatching (or missing) key named."""
    for key, want in target.items():
        if key in converted and tuple(converted[key].shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: {key}: shape {tuple(converted[key].shape)} in the file, {tuple(want.shape)} "
                                  f"in {encoder}; not weights of this encoder (another variant?); nothing was written")
    if not set(converted) & set(target):
        raise CheckpointError(f"{source}: no tensor of the file matches {encoder} (file e.g. {next(iter(converted), '-')!r}, "
                              f"encoder e.g. {next(iter(target), '-')!r}); nothing was written")
    missing = [k for k in target if k not in converted and not k.startswith(optional)]
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} of {encoder}'s tensors are not in the file (first: {missing[0]}); "
                              f"nothing was written")
    return {k: v for k, v in converted.items() if k in target}


def cache_path(f: HubFile, content_digest: str) -> tuple[Path, Path | None, str]:
    """Where the library's loader reads `f`: (file, refs file or None, snapshot revision)."""
    if f.hub == "torch":
        return torch_checkpoints_dir() / f.filename, None, ""
    repo = hf_cache_dir() / ("models--" + f.repo_id.replace("/", "--"))
    if f.revision and COMMIT.fullmatch(f.revision):
        return repo / "snapshots" / f.revision / f.filename, None, f.revision
    # A branch (timm's `main`): the snapshot folder is named by a commit; an imported file
    # has none, so a hash of its content stands in for it, and refs/<branch> points to it.
    revision = content_digest[:40]
    return repo / "snapshots" / revision / f.filename, repo / "refs" / (f.revision or "main"), revision


def import_weights(file: str | Path, spec: PretrainedSpec, force: bool = False) -> Path:
    """Convert `file` to `spec`'s layout, check it, and write it where the loaders read it."""
    file = Path(file)
    state_dict = read_state_dict(file)
    target, optional = reference_state_dict(spec)
    tensors = check_against(convert_keys(state_dict, target), target, optional, str(file), spec.ref.cli_name)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    f = next((c for c in spec.files if c.filename.endswith(".safetensors")), spec.files[0])
    digest = hashlib.sha1(b"".join(k.encode() + v.numpy().tobytes() for k, v in sorted(tensors.items()))).hexdigest()
    dest, ref_file, revision = cache_path(f, digest)
    if dest.resolve() == file.resolve():
        raise CheckpointError(f"{file}: is the cached file itself; nothing to import")
    if dest.exists() and not force:
        raise CheckpointError(f"{dest}: {spec.label} are already cached; add --force to replace them with {file}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if dest.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"format": "pt"})
        else:  # torch hub files are read with torch.load
            torch.save(tensors, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if ref_file is not None:
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(revision)
    return dest


# ------------------------------------------------------------------ list


def _hf_names() -> dict[str, tuple[str, str]]:
    """HF repo id -> (encoder, tag) for smp's table; timm repos are named `timm/<model>.<tag>`."""
    from segmentation_models_pytorch.encoders import encoders

    return {s["repo_id"]: (name, tag) for name, e in encoders.items() for tag, s in e["pretrained_settings"].items()}


def _torch_names() -> dict[str, tuple[str, str]]:
    """torch hub file name -> (encoder, tag), for torchvision's VGG and timm's URL-only weights."""
    import timm
    import torchvision

    names = {}
    for model in timm.list_pretrained():
        cfg = timm.models.get_pretrained_cfg(model)
        if cfg is not None and cfg.url and not cfg.hf_hub_id and isinstance(cfg.url, str):
            base, _, tag = model.partition(".")
            names[os.path.basename(cfg.url.split("?")[0])] = (f"tu-{base}", tag)
    for name in TORCHVISION_ENCODERS:
        for w in torchvision.models.get_model_weights(name):
            names[os.path.basename(w.url)] = (f"tv-{name}", "imagenet" if w == w.__class__.DEFAULT else w.name.lower())
    return names


def cached_weights() -> list[dict]:
    """Every weight file in the HF and torch hub caches, with the encoder and tag it serves."""
    rows = []
    hf = hf_cache_dir()
    if hf.is_dir():
        known = _hf_names()
        for repo in sorted(hf.glob("models--*")):
            repo_id = repo.name[len("models--"):].replace("--", "/", 1)
            org, _, model = repo_id.partition("/")
            encoder, tag = known.get(repo_id) or ((f"tu-{model.partition('.')[0]}", model.partition(".")[2] or "default")
                                                  if org == "timm" else (repo_id, "-"))
            for path in sorted(repo.glob("snapshots/*/*")):
                if path.suffix in WEIGHT_FILES and path.is_file():
                    rows.append({"encoder": encoder, "tag": tag, "cache": "hf", "file": str(path), "bytes": path.stat().st_size})
    checkpoints = torch_checkpoints_dir()
    if checkpoints.is_dir():
        files = [p for p in sorted(checkpoints.iterdir()) if p.suffix in WEIGHT_FILES and p.is_file()]
        known = _torch_names() if files else {}
        for path in files:
            encoder, tag = known.get(path.name, (path.name, "-"))
            rows.append({"encoder": encoder, "tag": tag, "cache": "torch", "file": str(path), "bytes": path.stat().st_size})
    return rows
