"""ES-BNN plugins: Expanding-and-Shrinking Binary Neural Networks for MMPretrain, MMDetection and Diffusers.

Importing the package (or :mod:`esbnn_plugins.ops`, :mod:`esbnn_plugins.models`) loads torch only and
changes no global state. Framework adapters load when asked for:

* ``esbnn_plugins.registry``: the ES layers in mmengine's root ``MODELS`` (any mmcv ``conv_cfg``);
* ``esbnn_plugins.mmpretrain``, ``esbnn_plugins.mmdet``: registered backbones, necks, heads, hooks;
* ``esbnn_plugins.diffusers``: the SR UNet and pipeline.
"""
from .ops import ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESLinear, expand, reduce

__version__ = "0.1.0"
__all__ = ["ESBinaryConv2d", "ESBinaryLinear", "ESConv2d", "ESLinear", "expand", "reduce", "__version__"]
