"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

A VGG16-BN encoder remembers where each 2x2 max came from ("pooling indices"); a
mirrored decoder puts every value back at that position (max-unpooling, no learned
upsampling) and densifies the sparse map with conv-BN-ReLU layers.

Odd sizes: the encoder pools in ceil mode, and each unpooling is told the exact size
its pool received (like the `upsample_h/upsample_w` of SegNet's Caffe layer), so any
input size >= 32 comes back at its own size without padding or cropping.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.classic.vgg import (
    VGGEncoder,
    conv_bn_relu,
    default_pool,
    init_convs,
    load_vgg_state_dict,
    reject_unknown,
    scaled,
)
from seglab.models.registry import MODELS

# Decoder channel chains, deepest stage first: each mirrors an encoder stage and ends
# at the width of the stage above it.
DECODER_CHAINS: tuple[tuple[int, ...], ...] = (
    (512, 512, 512, 512),
    (512, 512, 512, 256),
    (256, 256, 256, 128),
    (128, 128, 64),
    (64, 64),
)


def mirrored_decoder(chains: Sequence[Sequence[int]], width: float, transposed: bool = False) -> nn.ModuleList:
    stages = []
    for chain in chains:
        channels = [scaled(c, width) for c in chain]
        layers: list[nn.Module] = []
        for cin, cout in zip(channels, channels[1:]):
            layers += conv_bn_relu(cin, cout, transposed=transposed)
        stages.append(nn.Sequential(*layers))
    decoder = nn.ModuleList(stages)
    init_convs(decoder)
    return decoder


def unpool_decode(
    x: torch.Tensor, decoder: nn.ModuleList, switches: list[tuple[torch.Tensor, torch.Size]]
) -> torch.Tensor:
    """Unpool with the deepest indices first, running one decoder stage after each."""
    for stage, (indices, size) in zip(decoder, reversed(switches)):
        x = stage(F.max_unpool2d(x, indices, 2, 2, output_size=size))
    return x


def indexed_vgg(in_channels: int, width: float) -> VGGEncoder:
    pools = [default_pool(return_indices=True) for _ in range(5)]
    return VGGEncoder(in_channels, width, batch_norm=True, pools=pools)


@MODELS.register("segnet")
class SegNet(nn.Module):
    pretrained_encoder = "tv-vgg16_bn"  # what `model.encoder_weights: imagenet` loads (torchvision)

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, **kwargs):
        super().__init__()
        reject_unknown("segnet", kwargs)
        self.encoder = indexed_vgg(in_channels, width)
        self.decoder = mirrored_decoder(DECODER_CHAINS, width)
        # SegNet's last decoder conv (conv1_1_D) is a 3x3 straight to class scores.
        self.head = nn.Conv2d(scaled(64, width), num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages, switches = self.encoder.forward_with_indices(x)
        return self.head(unpool_decode(stages[-1], self.decoder, switches))

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "head": self.head}

    def load_encoder_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load torchvision vgg16_bn `features` weights (SegNet drops VGG's fc layers)."""
        return load_vgg_state_dict(self.encoder, state_dict)
