"""FCN-32s, FCN-16s and FCN-8s on VGG16 (Long, Shelhamer & Darrell, CVPR 2015).

VGG16's fc6/fc7 become 7x7 and 1x1 convs, a 1x1 "score" conv predicts classes at
stride 32, and learned (bilinear-initialised) deconvolutions bring the scores back up.
FCN-16s/8s first fuse with scores predicted from pool4 (and pool3) to recover detail.

Sizes follow the reference Caffe nets exactly: conv1_1 is padded by 100 so that fc6's
unpadded 7x7 conv has an input for any image size, and each upsampled map is cropped
by the fixed offsets those nets use to align it with the map it is fused with.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from seglab.models.classic.vgg import (
    VGGEncoder,
    bilinear_kernel,
    init_convs,
    load_vgg_state_dict,
    reject_unknown,
    scaled,
)
from seglab.models.registry import MODELS

# Encoder stage index of each skip source (stage outputs are pool1..pool5).
_STAGE = {"pool3": 2, "pool4": 3}


def _crop(x: torch.Tensor, offset: int, size: torch.Size) -> torch.Tensor:
    return x[..., offset : offset + size[0], offset : offset + size[1]]


def _upsampler(num_classes: int, stride: int) -> nn.ConvTranspose2d:
    # The paper initialises to bilinear and lets it learn; no bias, as in the Caffe nets.
    up = nn.ConvTranspose2d(num_classes, num_classes, 2 * stride, stride=stride, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(num_classes, 2 * stride))
    return up


class FCN(nn.Module):
    """Shared FCN body; subclasses only say which skips they fuse and the final stride."""

    name = "fcn"
    pretrained_encoder = "tv-vgg16"  # what `model.encoder_weights: imagenet` loads (torchvision)
    # (skip, crop offset of its score map), coarse to fine, from the reference prototxts.
    skips: tuple[tuple[str, int], ...] = ()
    # (final upsampling stride, crop offset to the input image).
    final: tuple[int, int] = (32, 19)

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        dropout: float = 0.5,
        **kwargs,
    ):
        super().__init__()
        reject_unknown(self.name, kwargs)
        self.encoder = VGGEncoder(in_channels, width, batch_norm=False, first_padding=100)
        fc = scaled(4096, width)
        self.neck = nn.Sequential(
            OrderedDict(
                fc6=nn.Conv2d(self.encoder.out_channels, fc, 7),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(dropout),
                fc7=nn.Conv2d(fc, fc, 1),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
            )
        )
        init_convs(self.neck)
        head: dict[str, nn.Module] = {"score_fr": nn.Conv2d(fc, num_classes, 1)}
        for skip, _ in self.skips:
            head[f"upscore_{skip}"] = _upsampler(num_classes, 2)
            head[f"score_{skip}"] = nn.Conv2d(self.encoder.stage_channels[_STAGE[skip]], num_classes, 1)
        head["upscore"] = _upsampler(num_classes, self.final[0])
        self.head = nn.ModuleDict(head)
        # The paper zero-initialises every class-scoring layer; training starts from 0 logits.
        for key, layer in self.head.items():
            if key.startswith("score"):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.encoder(x)
        score = self.head["score_fr"](self.neck(stages[-1]))
        for skip, offset in self.skips:
            score = self.head[f"upscore_{skip}"](score)
            skip_score = self.head[f"score_{skip}"](stages[_STAGE[skip]])
            score = score + _crop(skip_score, offset, score.shape[-2:])
        _, offset = self.final
        return _crop(self.head["upscore"](score), offset, x.shape[-2:])

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.neck, "head": self.head}

    def load_encoder_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load torchvision VGG16 weights; its fc6/fc7 Linear layers become our 7x7/1x1 convs."""
        fc = {"classifier.0": (self.neck.fc6, 7), "classifier.3": (self.neck.fc7, 1)}
        return load_vgg_state_dict(self.encoder, state_dict, fc)


@MODELS.register("fcn32s")
class FCN32s(FCN):
    name = "fcn32s"
    skips = ()
    final = (32, 19)


@MODELS.register("fcn16s")
class FCN16s(FCN):
    name = "fcn16s"
    skips = (("pool4", 5),)
    final = (16, 27)


@MODELS.register("fcn8s")
class FCN8s(FCN):
    name = "fcn8s"
    skips = (("pool4", 5), ("pool3", 9))
    final = (8, 31)
