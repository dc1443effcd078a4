"""Pretrained encoder weights by tag (`model.encoder_weights: imagenet`), offline first.

Resolution order, for a tag:
1. the tag names one file through the encoder's own library: smp's encoder table
   (Hugging Face repo + revision, `model.safetensors`), timm's pretrained_cfg
   (`hf_hub_id`, else `url`), torchvision's weights enum (`url`);
2. that file in the library's standard cache: the Hugging Face hub cache
   (HF_HUB_CACHE, else HF_HOME/hub) or the torch hub cache (TORCH_HOME/hub/checkpoints),
   read without any network access;
3. not cached: downloaded by the library's own client into that cache, unless
   HF_HUB_OFFLINE is set; when offline or the download fails, one line says which file
   is missing and the two ways to get it (`seglab weights download`, `seglab weights import`).

The weights are then loaded the way each library loads them (smp: the encoder's
state dict; timm: `create_model(pretrained=True)` with the file as its source;
torchvision: the checkpoint into the VGG encoder). A value that looks like a path is a
local state-dict file, as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from seglab.errors import CheckpointError, ConfigError, SeglabError

log = logging.getLogger("seglab")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")
DEFAULT_TAG = "imagenet"
# timm names its weight files this way on the hub and tries them in this order.
TIMM_HF_FILES = ("model.safetensors", "pytorch_model.bin")
TORCHVISION_ENCODERS = ("vgg16", "vgg16_bn")


def is_weights_path(value: str) -> bool:
    """A local file rather than a tag: a path separator, a weights suffix, or an existing file."""
    return "/" in value or "\\" in value or value.lower().endswith(WEIGHT_SUFFIXES) or Path(value).is_file()


# ------------------------------------------------------------------ which encoder, which file


@dataclass(frozen=True)
class EncoderRef:
    """An encoder as its weights' library knows it: smp name, timm model name, torchvision builder."""

    family: str  # "smp" | "timm" | "torchvision"
    name: str

    @property
    def cli_name(self) -> str:
        """The name `seglab weights download/import` takes for it."""
        return {"smp": "", "timm": "tu-", "torchvision": "tv-"}[self.family] + self.name


def encoder_ref(name: str) -> EncoderRef:
    """smp encoder names as smp reads them (`resnet34`, `tu-convnext_small`, `timm-regnetx_002`),
    `tv-vgg16` / `tv-vgg16_bn` for torchvision's VGG, and a bare timm model name."""
    if name.startswith("tu-"):
        return EncoderRef("timm", name[3:])
    if name.startswith("tv-"):
        if name[3:] not in TORCHVISION_ENCODERS:
            raise ConfigError(f"{name!r}: torchvision encoders with pretrained weights here: {', '.join('tv-' + n for n in TORCHVISION_ENCODERS)}")
        return EncoderRef("torchvision", name[3:])
    from segmentation_models_pytorch.encoders import encoders, is_equivalent_to_timm_universal

    if is_equivalent_to_timm_universal(name):  # smp itself builds these as tu- encoders
        timm_name = name.replace("timm-", "")
        return EncoderRef("timm", ("tf_" + timm_name) if "mobilenetv3" in timm_name else timm_name)
    if name in encoders:
        return EncoderRef("smp", name)
    import timm

    if timm.is_model(name):
        return EncoderRef("timm", name)
    raise ConfigError(f"encoder {name!r}: not an smp encoder, tu-<timm model> or {'/'.join('tv-' + n for n in TORCHVISION_ENCODERS)}")


@dataclass(frozen=True)
class HubFile:
    """One file as the library's loader fetches it: from the HF hub or the torch hub cache."""

    hub: str  # "hf" | "torch"
    filename: str
    repo_id: str = ""
    revision: str | None = None
    url: str = ""

    def describe(self) -> str:
        if self.hub == "hf":
            return f"HF hub {self.repo_id}{'@' + self.revision[:8] if self.revision else ''}/{self.filename}"
        return f"torch hub checkpoints/{self.filename}"

    def cache_dir(self) -> Path:
        return hf_cache_dir() if self.hub == "hf" else torch_checkpoints_dir()


@dataclass(frozen=True)
class PretrainedSpec:
    """What a tag names for one encoder: the weight file (alternatives in the library's order),
    smp's config.json (its mean/std), the timm `model.tag` name, the torchvision enum name."""

    ref: EncoderRef
    tag: str
    files: tuple[HubFile, ...]
    config: HubFile | None = None
    timm_name: str = ""
    timm_custom_load: bool = False
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std) when known without a file

    @property
    def label(self) -> str:
        return f"{self.tag} weights of encoder {self.ref.cli_name}"


def pretrained_spec(ref: EncoderRef, tag: str = DEFAULT_TAG) -> PretrainedSpec:
    """The file a tag names; an unknown tag lists the encoder's tags."""
    return {"smp": _smp_spec, "timm": _timm_spec, "torchvision": _torchvision_spec}[ref.family](ref, tag)


def _smp_spec(ref: EncoderRef, tag: str) -> PretrainedSpec:
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[ref.name]["pretrained_settings"]
    if tag not in settings:
        raise ConfigError(f"model.encoder_weights: {tag!r} is not a tag of smp encoder {ref.name!r} (tags: {', '.join(settings) or 'none'})")
    repo, revision = settings[tag]["repo_id"], settings[tag]["revision"]
    # smp's get_encoder fetches exactly these two files: config.json (mean/std) and the weights.
    return PretrainedSpec(ref, tag, (HubFile("hf", "model.safetensors", repo, revision),), HubFile("hf", "config.json", repo, revision))


def _timm_spec(ref: EncoderRef, tag: str) -> PretrainedSpec:
    import timm

    model, _, own_tag = ref.name.partition(".")
    if tag in (DEFAULT_TAG, own_tag):
        name = ref.name  # timm's default tag, or the one the encoder name carries
    else:
        name = f"{model}.{tag}"
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{model}.*") if n.partition(".")[0] == model]
        raise ConfigError(f"model.encoder_weights: {tag!r} is not a pretrained tag of timm model {model!r} (tags: imagenet = its default, {', '.join(tags) or 'none'})")
    full = f"{model}.{cfg.tag}" if cfg.tag else model
    stats = (tuple(cfg.mean), tuple(cfg.std)) if len(cfg.mean) == 3 and len(cfg.std) == 3 else None
    if cfg.hf_hub_id:  # timm prefers the hub when the cfg names a repo (_resolve_pretrained_source)
        repo, _, revision = cfg.hf_hub_id.partition("@")
        if cfg.hf_hub_filename:
            names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename.endswith(".safetensors") else (cfg.hf_hub_filename[:-4] + ".safetensors", cfg.hf_hub_filename)
        else:
            names = TIMM_HF_FILES
        files = tuple(HubFile("hf", n, repo, revision or None) for n in names)
        return PretrainedSpec(ref, cfg.tag or tag, files, timm_name=full, stats=stats)
    url = cfg.url if isinstance(cfg.url, str) else cfg.url[0]
    return PretrainedSpec(ref, cfg.tag or tag, (HubFile("torch", os.path.basename(urlparse(url).path), url=url),),
                          timm_name=full, timm_custom_load=bool(cfg.custom_load), stats=stats)


def _torchvision_spec(ref: EncoderRef, tag: str) -> PretrainedSpec:
    import torchvision

    enum = torchvision.models.get_model_weights(ref.name)
    names = {w.name.lower(): w for w in enum}
    weights = enum.DEFAULT if tag == DEFAULT_TAG else names.get(tag.lower())
    if weights is None:
        raise ConfigError(f"model.encoder_weights: {tag!r} is not a torchvision tag of {ref.name} (tags: imagenet, {', '.join(names)})")
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # torchvision's ImageNet classification presets
    transforms = weights.transforms()
    if hasattr(transforms, "mean"):
        mean, std = tuple(transforms.mean), tuple(transforms.std)
    return PretrainedSpec(ref, weights.name.lower() if tag != DEFAULT_TAG else tag,
                          (HubFile("torch", os.path.basename(urlparse(weights.url).path), url=weights.url),), stats=(mean, std))


# ------------------------------------------------------------------ caches


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    """HF_HUB_OFFLINE (read now, not at import as huggingface_hub does): no download of any hub file."""
    from huggingface_hub import constants

    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or constants.HF_HUB_OFFLINE


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rules, from the environment now."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(env[name])).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def torch_checkpoints_dir() -> Path:
    """Where torch.hub.load_state_dict_from_url keeps files (TORCH_HOME/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(f: HubFile) -> Path | None:
    """The file in its cache, found without any network access, or None."""
    if f.hub == "torch":
        path = torch_checkpoints_dir() / f.filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(f.repo_id, f.filename, cache_dir=hf_cache_dir(), revision=f.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _download(f: HubFile) -> Path:
    if f.hub == "torch":
        import torch.hub

        target = torch_checkpoints_dir() / f.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(f.url, str(target), progress=True)  # what load_state_dict_from_url does
        return target
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(f.repo_id, f.filename, revision=f.revision, cache_dir=hf_cache_dir()))


def _unreachable(f: HubFile) -> str | None:
    """Why the file's server cannot be reached (no DNS, no route, refused), or None."""
    import socket

    if f.hub == "hf":
        from huggingface_hub import constants

        url = constants.ENDPOINT
    else:
        url = f.url
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY"):
        return None  # only the client knows how to go through the proxy
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        return f"{host} cannot be reached (no network? {type(e).__name__}: {e})"
    return None


def missing_message(spec: PretrainedSpec, reason: str) -> str:
    first = spec.files[0]
    return (f"model.encoder_weights: {spec.label} are not in the cache ({first.describe()} under {first.cache_dir()}) and {reason}; "
            f"on a machine with network run `seglab weights download {spec.ref.cli_name} --tag {spec.tag}` and copy {first.cache_dir()} "
            f"to the same place here (or set {'HF_HOME' if first.hub == 'hf' else 'TORCH_HOME'} to the copy's parent), "
            f"or convert a file you have: `seglab weights import FILE --encoder {spec.ref.cli_name} --tag {spec.tag}`")


def resolve(spec: PretrainedSpec, download: bool = True) -> Path:
    """The local weight file of `spec`: from the cache, else downloaded (unless offline), else one error line."""
    for f in spec.files:
        path = cached_file(f)
        if path is not None:
            return path
    if offline() or not download:
        raise CheckpointError(missing_message(spec, "HF_HUB_OFFLINE is set" if offline() else "downloads are off"))
    from huggingface_hub.errors import EntryNotFoundError

    unreachable = _unreachable(spec.files[0])
    if unreachable:  # fail in one line now, not after the hub client's retries and their log lines
        raise CheckpointError(missing_message(spec, unreachable))
    log.info("downloading %s (%s) into %s", spec.label, spec.files[0].describe(), spec.files[0].cache_dir())
    error: Exception | None = None
    for f in spec.files:
        try:
            path = _download(f)
        except EntryNotFoundError as e:  # timm: no safetensors file in this repo, try the next name
            error = e
            continue
        except Exception as e:  # noqa: BLE001  (no network, proxy, HTTP, disk: each library raises its own types)
            error = e
            break
        if spec.config is not None:
            try:
                _download(spec.config)
            except Exception as e:  # noqa: BLE001  (only the mean/std; ImageNet's are used without it)
                log.info("%s: not downloaded (%s); normalising with ImageNet's mean/std", spec.config.describe(), type(e).__name__)
        return path
    text = str(error).strip().splitlines()[0].split(". ")[0][:200] if error and str(error).strip() else type(error).__name__
    raise CheckpointError(missing_message(spec, f"the download failed ({type(error).__name__}: {text})"))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spec_stats(spec: PretrainedSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) the weights were trained with: timm/torchvision cfg, smp's cached config.json, else ImageNet's."""
    if spec.stats is not None:
        return spec.stats
    if spec.config is not None:
        path = cached_file(spec.config)
        if path is not None:
            import json

            try:
                settings = json.loads(path.read_text())
                mean, std = tuple(float(v) for v in settings["mean"]), tuple(float(v) for v in settings["std"])
                if len(mean) == 3 and len(std) == 3:
                    return mean, std
            except (ValueError, KeyError, TypeError):
                log.info("%s: no mean/std in it; using ImageNet's", path)
    return IMAGENET_MEAN, IMAGENET_STD


# ------------------------------------------------------------------ resolving a config


@dataclass
class Resolved:
    """The encoder weights of one config: None (random), a local file, or a tag's file."""

    value: str | None
    path: Path | None = None
    spec: PretrainedSpec | None = None
    source: str = ""
    stats: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD)

    @property
    def tag(self) -> str | None:
        return self.spec.tag if self.spec else None


def weights_label(resolved: Resolved) -> str:
    """How the console names a part's start: `imagenet (HF hub smp-hub/...)` or `file PATH`."""
    return f"{resolved.tag} ({resolved.source})" if resolved.spec else resolved.source


def load_weight_files(model, weights: Resolved, loaded_at_build: bool, model_weights: str | None):
    """Load what the library did not load while building the model (a local encoder file,
    then `model.weights`) and record in `model.weights_origin` which part started from what."""
    from seglab.models.weights import changed_parts, load_encoder_weights, load_model_weights

    model.weights_origin = {"encoder": weights_label(weights)} if loaded_at_build else {}
    if weights.path is not None and not loaded_at_build:
        parts = changed_parts(model, lambda: load_encoder_weights(model, weights.path))
        model.weights_origin.update({part: weights_label(weights) for part in parts})
    if model_weights:
        parts = changed_parts(model, lambda: load_model_weights(model, model_weights))
        model.weights_origin.update({part: f"file {model_weights}" for part in parts})
    return model


def describe_origin(model, record=None) -> str:
    """One line: each part of the model, pretrained (from what) or random."""
    origin = getattr(model, "weights_origin", {}) or {}
    parts = list(model.parts()) if hasattr(model, "parts") else ["model"]
    checksum = f", sha256 {record.sha256[:12]}" if record is not None and record.sha256 else ""
    return "; ".join(f"{part} pretrained: {origin[part]}{checksum if part == 'encoder' else ''}" if part in origin else f"{part} random"
                     for part in parts)


def resolve_value(ref: EncoderRef | None, value: str | None, record=None, download: bool = True) -> Resolved:
    """`model.encoder_weights` -> the file to load. A record written by an earlier run
    (model.encoder_weights_resolved) with the same value is used as is."""
    if not value:
        return Resolved(None)
    if is_weights_path(value):
        path = Path(value)
        if not path.is_file():
            raise CheckpointError(f"model.encoder_weights: {path}: weights file not found (a tag such as imagenet, or a local state-dict file)")
        return Resolved(value, path, source=f"file {path}")
    if ref is None:
        raise ConfigError(f"model.encoder_weights: {value!r}: this model has no encoder with pretrained weights (give a local file)")
    spec = pretrained_spec(ref, value)
    if record is not None and record.value == value and record.file and Path(record.file).is_file():
        path = Path(record.file)
    else:
        path = resolve(spec, download)
    source = next((f.describe() for f in spec.files if f.filename == path.name), spec.files[0].describe())
    return Resolved(value, path, spec, source, spec_stats(spec))


def resolve_config(cfg, ref: EncoderRef | None):
    """The config with its encoder weights resolved (downloaded if needed), recorded
    (`model.encoder_weights_resolved`: value, tag, source, file, sha256) and, where the
    config sets no mean/std, the normalisation set to the weights' statistics."""
    from seglab.config.schema import WeightsRecord

    model = cfg.model
    if not model.encoder_weights:
        return cfg.model_copy(update={"model": model.model_copy(update={"encoder_weights_resolved": None})})
    old = model.encoder_weights_resolved if model.encoder_weights_resolved and model.encoder_weights_resolved.value == model.encoder_weights else None
    resolved = resolve_value(ref, model.encoder_weights, download=True)
    digest = sha256(resolved.path)
    if old is not None and old.sha256 and old.sha256 != digest:
        raise SeglabError(
            f"model.encoder_weights: {resolved.path} (sha256 {digest[:12]}) is not the file this config was trained with "
            f"({old.source}, sha256 {old.sha256[:12]}); put that file back, or set model.encoder_weights_resolved=null to train with this one")
    record = WeightsRecord(value=model.encoder_weights, tag=resolved.tag, source=resolved.source, file=str(resolved.path), sha256=digest)
    cfg = cfg.model_copy(update={"model": model.model_copy(update={"encoder_weights_resolved": record})})
    if resolved.spec is not None:
        stats = dict(zip(("mean", "std"), resolved.stats))
        unset = {k: v for k, v in stats.items() if k not in cfg.augment.model_fields_set}
        if unset:
            cfg = cfg.model_copy(update={"augment": cfg.augment.model_copy(update=unset)})
    return cfg
