"""Classifiers: a timm backbone (pooled features) plus a head, as plain nn.Modules.

`model.encoder` names any timm model (its own classifier removed); `model.encoder_weights`
is a timm pretrained tag (`imagenet` = timm's default, loaded by timm itself from the
file seglab/models/pretrained.py resolves in the hub cache) or a local file for the
backbone; `model.weights` is a file for the whole classifier. `parts()` is
{encoder, head}, so `optim.encoder_lr` and `optim.freeze: [encoder]` work as for
segmentation. A new architecture (e.g. separate mask/gender/age heads) is one builder
decorated with `@CLASSIFIERS.register(name)`.
"""

from __future__ import annotations

import difflib
import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import CheckpointError, ConfigError
from seglab.models.pretrained import EncoderRef, Resolved, is_weights_path, load_weight_files, resolve_value
from seglab.registry import Registry

CLASSIFIERS = Registry("classifier")


class LinearHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.drop(features))

    def cam_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight [C, D], bias [C]) that turn feature maps into class activation maps (SnapMix)."""
        return self.fc.weight, self.fc.bias


def arcface_logits(cos: torch.Tensor, target: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """ArcFace (Deng et al. 2019): s * cos(theta_y + m) for the true class y, s * cos(theta_j) for the others.

    Where theta_y + m would pass pi, cos(theta + m) stops decreasing; there the usual
    linear continuation cos(theta) - m * sin(pi - m) keeps the logit monotonic in theta.
    """
    cos = cos.float().clamp(-1.0, 1.0)
    sin = (1.0 - cos.pow(2)).clamp_min(0.0).sqrt()
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - margin * math.sin(math.pi - margin))
    one_hot = F.one_hot(target.long(), cos.shape[1]).to(cos.dtype)
    return scale * (one_hot * phi + (1.0 - one_hot) * cos)


class ArcFaceHead(nn.Module):
    """Cosine similarity between the normalised features and normalised class centres.

    Without a target (evaluation) it returns `scale * cos(theta)`; with the true classes
    (training) the true class's angle gets the additive margin, so any loss on these
    logits (CE, label smoothing, class weights, focal) becomes an ArcFace loss.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0, margin: float = 0.5, drop_rate: float = 0.0):
        super().__init__()
        self.scale, self.margin = float(scale), float(margin)
        self.drop = nn.Dropout(drop_rate)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(self.drop(features).float()), F.normalize(self.weight.float()))

    def cam_weights(self) -> tuple[torch.Tensor, None]:
        """The normalised class centres: a CAM up to the features' norm, which only scales it."""
        return F.normalize(self.weight.float()), None

    def forward(self, features: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(features)
        if target is None:
            return self.scale * cos
        return arcface_logits(cos, target, self.scale, self.margin)


class TimmClassifier(nn.Module):
    """timm backbone -> pooled features [B, D] -> head -> logits [B, C]."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(x), target)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "head": self.head}


def timm_backbone(name: str, in_channels: int = 3, pretrained: Resolved | None = None, **kwargs) -> nn.Module:
    """A timm model without its classifier; with `pretrained` (a resolved timm tag), timm loads
    that file itself (pretrained_cfg_overlay), adapting the input conv as it does for the hub."""
    name = name.removeprefix("tu-")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"model.encoder: {name!r} is not a timm model{hint}")
    if pretrained is not None:
        name = pretrained.spec.timm_name
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained.path), "custom_load": pretrained.spec.timm_custom_load})
    try:
        return timm.create_model(name, num_classes=0, in_chans=in_channels, **{"pretrained": False, **kwargs})
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if pretrained is not None:
            raise CheckpointError(f"model.encoder_weights: {pretrained.path}: timm cannot load it into {name} ({first}); "
                                  f"check the file with `seglab weights import FILE --encoder tu-{name}`") from None
        raise ConfigError(f"model.encoder: cannot build timm model {name!r}: {first}") from None


@CLASSIFIERS.register("classifier")
def classifier(encoder: str, num_classes: int, in_channels: int = 3, head: str = "linear", drop_rate: float = 0.0,
               arcface_scale: float = 30.0, arcface_margin: float = 0.5, pretrained: Resolved | None = None,
               **timm_kwargs) -> TimmClassifier:
    """timm backbone + linear or ArcFace head."""
    backbone = timm_backbone(encoder, in_channels, pretrained, **timm_kwargs)
    if head == "linear":
        top = LinearHead(backbone.num_features, num_classes, drop_rate)
    elif head == "arcface":
        top = ArcFaceHead(backbone.num_features, num_classes, arcface_scale, arcface_margin, drop_rate)
    else:
        raise ConfigError(f"classification.head: unknown head {head!r} (linear or arcface)")
    return TimmClassifier(backbone, top)


def build_classifier(cfg, options, num_classes: int) -> nn.Module:
    """The classifier `model.*` and the task's options (its head, dropout, ArcFace) describe."""
    c, m = options, cfg.model
    builder = CLASSIFIERS.get(m.arch, "model.arch")
    value = m.encoder_weights
    ref = encoder_backbone_ref(m.encoder) if value and not is_weights_path(value) else None
    weights = resolve_value(ref, value, m.encoder_weights_resolved)
    model = builder(encoder=m.encoder, num_classes=num_classes, in_channels=m.in_channels, head=c.head,
                    drop_rate=c.drop_rate, arcface_scale=c.arcface_scale, arcface_margin=c.arcface_margin,
                    pretrained=weights if weights.spec is not None else None, **m.params)
    # timm loads a pretrained tag's file itself while building the backbone.
    return load_weight_files(model, weights, weights.spec is not None, m.weights)


def encoder_backbone_ref(encoder: str) -> EncoderRef:
    """A classifier's backbone is always a timm model (with or without `tu-`)."""
    return EncoderRef("timm", encoder.removeprefix("tu-"))
