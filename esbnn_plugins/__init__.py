"""ES-BNN plugins: Expanding-and-Shrinking Binary Neural Networks for MMPretrain, MMDetection and Diffusers.

Importing the package applies the stack fixes (:mod:`esbnn_plugins.compat`) and registers the ES
layers in mmengine's root ``MODELS`` registry (:mod:`esbnn_plugins.registry`), so configs only need
``custom_imports=dict(imports=['esbnn_plugins'])``.
"""
from . import compat, registry  # noqa: F401
from .ops import ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESLinear, expand, reduce

__version__ = "0.1.0"
__all__ = ["ESBinaryConv2d", "ESBinaryLinear", "ESConv2d", "ESLinear", "expand", "reduce", "__version__"]
