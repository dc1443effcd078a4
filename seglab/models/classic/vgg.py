"""The VGG16 / VGG16-BN encoder shared by every classic model, and its weight loading.

The encoder keeps torchvision's `vgg16().features` / `vgg16_bn().features` layout: one
`nn.Sequential` called `features` with the same indices, so `features.N.weight` keys of
a torchvision checkpoint land on the same layers. Models change only what carries no
weights (pooling kernels and strides, conv padding and dilation), which leaves the
indices and shapes alone.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from seglab.errors import CheckpointError, ConfigError
from seglab.models.weights import adapt_input_convs

# (channels, convs) per stage; the pool after each stage ends it.
VGG16_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def scaled(channels: int, width: float) -> int:
    """A channel count multiplied by `width`; never below 1 so tiny test models still build."""
    return max(1, int(round(channels * width)))


def default_pool(ceil_mode: bool = True, return_indices: bool = False) -> nn.MaxPool2d:
    # Caffe, where all of these papers were written, rounds pooled sizes up; with
    # ceil_mode every input pixel falls into some window, whatever the input size.
    return nn.MaxPool2d(2, 2, ceil_mode=ceil_mode, return_indices=return_indices)


class VGGEncoder(nn.Module):
    """VGG16's 13 convs and 5 pools; `forward` returns the output of each of the 5 stages.

    pools: the 5 pooling layers (default: 2x2 stride 2, ceil mode).
    dilations: per stage; DeepLab dilates the convs that follow a pool whose stride it removed.
    first_padding: padding of conv1_1 (FCN pads by 100 so that fc6 always has a 7x7 input).
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: float = 1.0,
        batch_norm: bool = False,
        pools: Sequence[nn.Module] | None = None,
        dilations: Sequence[int] = (1, 1, 1, 1, 1),
        first_padding: int = 1,
    ):
        super().__init__()
        pools = list(pools) if pools is not None else [default_pool() for _ in VGG16_STAGES]
        if len(pools) != len(VGG16_STAGES) or len(dilations) != len(VGG16_STAGES):
            raise ValueError("VGGEncoder needs exactly 5 pools and 5 dilations")
        self.batch_norm = batch_norm
        self.stage_channels = [scaled(c, width) for c, _ in VGG16_STAGES]
        layers: list[nn.Module] = []
        cin = in_channels
        for (channels, convs), pool, dilation in zip(VGG16_STAGES, pools, dilations):
            cout = scaled(channels, width)
            for _ in range(convs):
                padding = first_padding if not layers else dilation
                layers.append(nn.Conv2d(cin, cout, 3, padding=padding, dilation=dilation))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(cout))
                layers.append(nn.ReLU(inplace=True))
                cin = cout
            layers.append(pool)
        self.features = nn.Sequential(*layers)
        init_convs(self.features)

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_with_indices(x)[0]

    def forward_with_indices(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Size]]]:
        """Stage outputs, plus (pool indices, pre-pool size) for pools built with return_indices."""
        stages: list[torch.Tensor] = []
        switches: list[tuple[torch.Tensor, torch.Size]] = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
                size = x.shape[-2:]
                x, indices = layer(x)
                switches.append((indices, size))
            else:
                x = layer(x)
            if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                stages.append(x)
        return stages, switches


def init_convs(module: nn.Module) -> None:
    # torchvision's VGG init; PyTorch's default shrinks activations through 13+ plain
    # ReLU convs enough that the non-BN variants barely train from scratch.
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, transposed: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return [conv(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _decimate(weight: torch.Tensor, shape: Sequence[int]) -> torch.Tensor | None:
    """Keep every n-th filter / input channel and evenly spaced kernel taps (DeepLab's
    "decimation" of VGG's fc6 7x7x4096 into 3x3x1024); None when no such subsampling fits."""
    index: list[slice | int] = []
    for dim, (src, dst) in enumerate(zip(weight.shape, shape)):
        if src == dst:
            index.append(slice(None))
        elif dim < 2 and dst < src and src % dst == 0:
            index.append(slice(None, None, src // dst))
        elif dim >= 2 and 1 < dst < src and (src - 1) % (dst - 1) == 0:
            index.append(slice(None, None, (src - 1) // (dst - 1)))
        else:
            return None
    return weight[tuple(index)]


def _fc_as_conv(key: str, value: torch.Tensor, target: torch.Tensor, taps: int, decimate: bool) -> torch.Tensor:
    """A torchvision Linear weight/bias reshaped (and if allowed decimated) to a conv's shape."""
    original = tuple(value.shape)
    if value.dim() == 2:
        # Linear(C*k*k, out) flattens a C x k x k map in C, H, W order: a conv's layout.
        out, flat = value.shape
        if flat % (taps * taps) == 0:
            value = value.reshape(out, flat // (taps * taps), taps, taps)
    if value.shape == target.shape:
        return value
    if decimate and value.dim() == target.dim():
        sub = _decimate(value, target.shape)
        if sub is not None:
            return sub
    raise CheckpointError(f"{key}: checkpoint shape {original} does not fit model shape {tuple(target.shape)}")


def load_vgg_state_dict(
    encoder: VGGEncoder,
    state_dict: Mapping[str, torch.Tensor],
    fc: Mapping[str, tuple[nn.Module, int]] | None = None,
    decimate_fc: bool = False,
) -> tuple[list[str], list[str]]:
    """Load a torchvision vgg16/vgg16_bn state dict (or a `features`-only one) into `encoder`.

    fc: torchvision classifier prefix -> (conv, kernel taps of the fc it came from), e.g.
    {"classifier.0": (fc6, 7), "classifier.3": (fc7, 1)}, for models that keep fc6/fc7 as convs.
    Returns (missing, unexpected), both in the checkpoint's key names. Every shape is
    checked before anything is copied, so a failing load leaves the model untouched.
    """
    fc = dict(fc or {})
    targets: dict[str, torch.Tensor] = {
        f"features.{k}": v for k, v in encoder.features.state_dict(keep_vars=True).items()
    }
    for prefix, (module, _) in fc.items():
        for name, value in module.state_dict(keep_vars=True).items():
            targets[f"{prefix}.{name}"] = value

    def canonical(key: str) -> str:
        # A features-only dict (`vgg16().features.state_dict()`) has keys like "0.weight".
        return f"features.{key}" if key[:1].isdigit() else key

    # A model with other than 3 input channels takes the RGB filters adapted as smp/timm do.
    source = adapt_input_convs({canonical(k): v for k, v in state_dict.items()}, targets)
    has_bn = any(k.startswith("features.") and k.endswith("running_mean") for k in source)
    has_features = any(k.startswith("features.") for k in source)
    if has_features and has_bn != encoder.batch_norm:
        want, got = ("vgg16_bn", "vgg16") if encoder.batch_norm else ("vgg16", "vgg16_bn")
        raise CheckpointError(
            f"this encoder is {want} but the checkpoint looks like {got} "
            f"(BatchNorm statistics {'present' if has_bn else 'absent'}); their layer indices differ"
        )

    taps = {prefix: t for prefix, (_, t) in fc.items()}
    updates: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in source.items():
        if key not in targets:
            unexpected.append(key)
            continue
        target = targets[key]
        prefix = key.rsplit(".", 1)[0]
        if prefix in taps:
            value = _fc_as_conv(key, value, target, taps[prefix], decimate_fc)
        elif value.shape != target.shape:
            raise CheckpointError(
                f"{key}: checkpoint shape {tuple(value.shape)} does not fit model shape {tuple(target.shape)}"
            )
        updates[key] = value
    with torch.no_grad():
        for key, value in updates.items():
            targets[key].copy_(value)
    missing = [k for k in targets if k not in updates]
    return missing, unexpected


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """ConvTranspose2d weights that upsample each channel bilinearly (FCN's initialisation)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - torch.abs(torch.arange(size, dtype=torch.float32) - center) / factor
    kernel = taps[:, None] * taps[None, :]
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


def reject_unknown(model: str, kwargs: Mapping[str, object]) -> None:
    """Builders take `**kwargs` per the registry contract; a misspelt option must not vanish."""
    if kwargs:
        raise ConfigError(f"model {model!r}: unknown option(s) {', '.join(sorted(kwargs))}")
