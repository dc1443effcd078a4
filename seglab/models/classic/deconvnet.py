"""DeconvNet (Noh, Hong & Han, ICCV 2015).

VGG16-BN plus fc6/fc7 as convs; a mirrored decoder first "deconvolves" fc6 back to a
pool5-sized map, then alternates max-unpooling (with the encoder's pooling indices)
and 3x3 deconvolutions with BN, down to a 1x1 class score layer.

Sizes: the paper trains on 224x224 crops, where fc6's 7x7 conv shrinks pool5 to 1x1
and the fc6 deconvolution grows it back. To take any input size, fc6 and its
deconvolution are padded by 3 here, so they keep pool5's size instead (same weights,
same receptive field). Unpooling gets each pool's input size, so odd sizes need no
padding or cropping (see segnet.py).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from seglab.models.classic.segnet import DECODER_CHAINS, indexed_vgg, mirrored_decoder, unpool_decode
from seglab.models.classic.vgg import init_convs, load_vgg_state_dict, reject_unknown, scaled
from seglab.models.registry import MODELS

# Like SegNet's decoder, but stage 1 keeps two 64-channel deconvs before the 1x1 score.
DECONV_CHAINS = DECODER_CHAINS[:-1] + ((64, 64, 64),)


@MODELS.register("deconvnet")
class DeconvNet(nn.Module):
    pretrained_encoder = "tv-vgg16_bn"  # what `model.encoder_weights: imagenet` loads (torchvision)

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, **kwargs):
        super().__init__()
        reject_unknown("deconvnet", kwargs)
        self.encoder = indexed_vgg(in_channels, width)
        c5, fc = self.encoder.out_channels, scaled(4096, width)
        self.neck = nn.Sequential(
            OrderedDict(
                fc6=nn.Conv2d(c5, fc, 7, padding=3),
                bn6=nn.BatchNorm2d(fc),
                relu6=nn.ReLU(inplace=True),
                fc7=nn.Conv2d(fc, fc, 1),
                bn7=nn.BatchNorm2d(fc),
                relu7=nn.ReLU(inplace=True),
                deconv_fc6=nn.ConvTranspose2d(fc, c5, 7, padding=3),
                bn_deconv_fc6=nn.BatchNorm2d(c5),
                relu_deconv_fc6=nn.ReLU(inplace=True),
            )
        )
        init_convs(self.neck)
        self.decoder = mirrored_decoder(DECONV_CHAINS, width, transposed=True)
        self.head = nn.Conv2d(scaled(64, width), num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages, switches = self.encoder.forward_with_indices(x)
        return self.head(unpool_decode(self.neck(stages[-1]), self.decoder, switches))

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.neck, "decoder": self.decoder, "head": self.head}

    def load_encoder_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load torchvision vgg16_bn weights; its fc6/fc7 Linear layers become our convs."""
        fc = {"classifier.0": (self.neck.fc6, 7), "classifier.3": (self.neck.fc7, 1)}
        return load_vgg_state_dict(self.encoder, state_dict, fc)
