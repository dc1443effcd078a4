"""DeepLab v1 (LargeFOV), v2 (VGG16 ASPP-L) and v3 (ASPP with image pooling).

All three keep VGG's weights but remove the stride of late pools and dilate the convs
after them ("atrous" convolution), so the encoder sees the same context at a finer
output stride; logits are bilinearly upsampled to the input size, as in the papers
(whose CRF post-processing is left out).

- v1 LargeFOV (Chen et al., ICLR 2015): pools 3x3 (stride 2, 2, 2, 1, 1), conv5 dilation 2,
  fc6 a 3x3 conv with dilation 12 and 1024 channels, fc7 1x1; output stride 8.
- v2 (Chen et al., TPAMI 2017): the same encoder; four parallel fc6/fc7/fc8 branches with
  dilations 6/12/18/24 whose class scores are summed.
- v3 (Chen et al., 2017): the paper uses ResNet; here a VGG16-BN at output stride 16 (or 8)
  with ASPP = 1x1 conv + three dilated 3x3 convs + image pooling, concatenated and
  projected by a 1x1 conv, then a 1x1 classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ConfigError
from seglab.models.classic.vgg import (
    VGGEncoder,
    default_pool,
    init_convs,
    load_vgg_state_dict,
    reject_unknown,
    scaled,
)
from seglab.models.registry import MODELS


def _resize(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _deeplab_vgg(in_channels: int, width: float) -> VGGEncoder:
    # DeepLab's prototxts: 3x3 pools with padding 1; pool4/pool5 keep the resolution.
    pools = [nn.MaxPool2d(3, 2, padding=1) for _ in range(3)] + [nn.MaxPool2d(3, 1, padding=1) for _ in range(2)]
    return VGGEncoder(in_channels, width, pools=pools, dilations=(1, 1, 1, 1, 2))


def _classifier(cin: int, num_classes: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, num_classes, 1)
    nn.init.normal_(conv.weight, std=0.01)  # DeepLab's fc8 init
    nn.init.zeros_(conv.bias)
    return conv


def _fc_layers(cin: int, channels: int, dilation: int, dropout: float) -> OrderedDict[str, nn.Module]:
    """VGG's fc6/fc7 as convs, fc6 a dilated 3x3 (named as in the DeepLab prototxts)."""
    layers = OrderedDict(
        fc6=nn.Conv2d(cin, channels, 3, padding=dilation, dilation=dilation),
        relu6=nn.ReLU(inplace=True),
        drop6=nn.Dropout(dropout),
        fc7=nn.Conv2d(channels, channels, 1),
        relu7=nn.ReLU(inplace=True),
        drop7=nn.Dropout(dropout),
    )
    for layer in layers.values():
        init_convs(layer)
    return layers


@MODELS.register("deeplabv1")
class DeepLabV1(nn.Module):
    """DeepLab-LargeFOV: dilated VGG16, fc6 3x3 with dilation 12 and 1024 channels."""

    pretrained_encoder = "tv-vgg16"  # what `model.encoder_weights: imagenet` loads (torchvision)

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        dropout: float = 0.5,
        fc_dilation: int = 12,
        **kwargs,
    ):
        super().__init__()
        reject_unknown("deeplabv1", kwargs)
        self.encoder = _deeplab_vgg(in_channels, width)
        fc = _fc_layers(self.encoder.out_channels, scaled(1024, width), fc_dilation, dropout)
        # pool5a: the 3x3 average pool the LargeFOV prototxt puts before fc6.
        self.neck = nn.Sequential(OrderedDict(pool5a=nn.AvgPool2d(3, 1, padding=1), **fc))
        self.head = _classifier(scaled(1024, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.head(self.neck(self.encoder(x)[-1])), x)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.neck, "head": self.head}

    def load_encoder_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load torchvision VGG16 weights; fc6/fc7 are decimated to 3x3x1024 / 1x1x1024 as
        DeepLab does (every 4th filter, every 3rd kernel tap) when the shapes allow it."""
        fc = {"classifier.0": (self.neck.fc6, 7), "classifier.3": (self.neck.fc7, 1)}
        return load_vgg_state_dict(self.encoder, state_dict, fc, decimate_fc=True)


@MODELS.register("deeplabv2")
class DeepLabV2(nn.Module):
    """DeepLab v2 VGG16 ASPP-L: one fc6/fc7/fc8 branch per dilation rate, scores summed."""

    pretrained_encoder = "tv-vgg16"  # what `model.encoder_weights: imagenet` loads (torchvision)

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        rates: tuple[int, ...] = (6, 12, 18, 24),
        dropout: float = 0.5,
        **kwargs,
    ):
        super().__init__()
        reject_unknown("deeplabv2", kwargs)
        self.encoder = _deeplab_vgg(in_channels, width)
        channels = scaled(1024, width)
        self.aspp = nn.ModuleList(
            nn.Sequential(_fc_layers(self.encoder.out_channels, channels, r, dropout)) for r in rates
        )
        self.head = nn.ModuleList(_classifier(channels, num_classes) for _ in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-1]
        logits = sum(fc8(branch(features)) for branch, fc8 in zip(self.aspp, self.head))
        return _resize(logits, x)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.aspp, "head": self.head}

    def load_encoder_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        return load_vgg_state_dict(self.encoder, state_dict)


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global context broadcast back over the feature map."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
        if self.training and pooled.shape[0] == 1:
            # One image gives one value per channel, which has no batch statistics (plain
            # BatchNorm raises); normalise with the running ones so batch-1 training works.
            bn = self.bn
            pooled = F.batch_norm(pooled, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            pooled = self.bn(pooled)
        return F.relu(pooled).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """DeepLab v3's atrous spatial pyramid pooling (1x1, three dilated 3x3, image pooling)."""

    def __init__(self, cin: int, channels: int, rates: tuple[int, ...]):
        super().__init__()

        def conv(kernel: int, dilation: int = 1) -> nn.Sequential:
            pad = dilation * (kernel // 2)
            return nn.Sequential(
                nn.Conv2d(cin, channels, kernel, padding=pad, dilation=dilation, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )

        self.branches = nn.ModuleList([conv(1), *(conv(3, r) for r in rates), ImagePooling(cin, channels)])
        n = len(self.branches)
        self.project = nn.Sequential(
            nn.Conv2d(n * channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


@MODELS.register("deeplabv3")
class DeepLabV3(nn.Module):
    """DeepLab v3 on a dilated VGG16-BN; output_stride 16 (rates 6/12/18) or 8 (rates doubled)."""

    pretrained_encoder = "tv-vgg16_bn"  # what `model.encoder_weights: imagenet` loads (torchvision)

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        output_stride: int = 16,
        **kwargs,
    ):
        super().__init__()
        reject_unknown("deeplabv3", kwargs)
        keep = nn.MaxPool2d(3, 1, padding=1)  # a pool that keeps the resolution
        if output_stride == 16:
            pools, dilations, rates = [*(default_pool() for _ in range(4)), keep], (1,) * 5, (6, 12, 18)
        elif output_stride == 8:
            pools = [*(default_pool() for _ in range(3)), keep, nn.MaxPool2d(3, 1, padding=1)]
            dilations, rates = (1, 1, 1, 1, 2), (12, 24, 36)
        else:
            raise ConfigError(f"model 'deeplabv3': output_stride must be 8 or 16, got {output_stride}")
        self.encoder = VGGEncoder(in_channels, width, batch_norm=True, pools=pools, dilations=dilations)
        channels = scaled(256, width)
        self.aspp = ASPP(self.encoder.out_channels, channels, rates)
        self.head = _classifier(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.head(self.aspp(self.encoder(x)[-1])), x)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.aspp, "head": self.head}

    def load_encoder_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        return load_vgg_state_dict(self.encoder, state_dict)
