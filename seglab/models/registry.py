"""The model registry.

Every builder takes `(num_classes, in_channels, **kwargs)` and returns an `nn.Module`
whose `forward(x)` maps `[B, in_channels, H, W]` floats to `[B, num_classes, H, W]`
logits at the input size, and whose `parts()` returns `{part name: module}`
(encoder / neck / decoder / head) covering every parameter exactly once.
"""

from seglab.registry import Registry

MODELS = Registry("model")
