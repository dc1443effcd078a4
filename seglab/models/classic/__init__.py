"""The classic segmentation models of the course, each registered in `MODELS` on import.

fcn32s / fcn16s / fcn8s (fcn.py), deconvnet (deconvnet.py), segnet (segnet.py),
deeplabv1 / deeplabv2 / deeplabv3 (deeplab.py); all share the VGG16 encoder in vgg.py.
"""

from seglab.models.classic import deconvnet, deeplab, fcn, segnet, vgg  # noqa: F401  (registers)

CLASSIC_MODELS = ("fcn32s", "fcn16s", "fcn8s", "deconvnet", "segnet", "deeplabv1", "deeplabv2", "deeplabv3")
