"""Modern architectures from segmentation-models-pytorch, with any smp or timm encoder.

smp already implements them well; this module only adapts them to seglab's model
contract: any input size (pad to the encoder's stride, crop the logits back) and
named parts for per-part learning rates and freezing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.registry import MODELS

# PAN's pyramid attention pools the stride-32 map three more times: it needs >= 256 px.
MIN_INPUT = {"PAN": 256}
SMP_ARCHS = ("Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN", "UPerNet", "Segformer")


class SmpSegmenter(nn.Module):
    def __init__(self, arch: str, num_classes: int, in_channels: int = 3, encoder: str = "resnet34",
                 timm_pretrained: dict | None = None, **kwargs):
        super().__init__()
        import segmentation_models_pytorch as smp

        # encoder_weights=None: smp never downloads; seglab resolves pretrained files itself
        # (seglab/models/pretrained.py). A tu- encoder's file is handed to timm's own loader
        # (`timm_pretrained` = timm's pretrained_cfg_overlay: {file, custom_load}), which adapts
        # the input conv and the checkpoint's layout like timm.create_model(pretrained=True).
        if timm_pretrained:
            kwargs.update(encoder_weights=True, pretrained_cfg_overlay=timm_pretrained)
        else:
            kwargs["encoder_weights"] = None
        self.net = smp.create_model(arch, encoder_name=encoder, in_channels=in_channels, classes=num_classes, **kwargs)
        self.arch, self.encoder_name = arch, encoder
        self.size_divisor = 32
        self.min_size = MIN_INPUT.get(arch, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = max((-h) % self.size_divisor, self.min_size - h)
        pad_w = max((-w) % self.size_divisor, self.min_size - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        logits = self.net(x)
        return logits[..., :h, :w]

    def parts(self) -> dict[str, nn.Module]:
        parts = {"encoder": self.net.encoder, "decoder": self.net.decoder, "head": self.net.segmentation_head}
        if getattr(self.net, "classification_head", None) is not None:
            parts["aux_head"] = self.net.classification_head
        return parts

    def load_encoder_state_dict(self, state_dict: dict) -> tuple[list[str], list[str]]:
        encoder = self.net.encoder
        own = encoder.state_dict()
        # timm-universal encoders keep the timm model under `.model`; accept plain timm keys too.
        if not set(state_dict) & set(own) and all(k.startswith("model.") for k in own):
            state_dict = {f"model.{k}": v for k, v in state_dict.items()}
        from seglab.models.weights import load_matching

        return load_matching(encoder, state_dict, "encoder")


def _register(arch: str) -> None:
    def build(num_classes: int, in_channels: int = 3, encoder: str = "resnet34", **kwargs) -> SmpSegmenter:
        return SmpSegmenter(arch, num_classes, in_channels, encoder, **kwargs)

    build.__name__ = arch
    build.__doc__ = f"segmentation-models-pytorch {arch} with any smp/timm encoder"
    MODELS.register(arch)(build)


for _arch in SMP_ARCHS:
    _register(_arch)
