"""Real 1-bit deployment (issue 11): packed binary layers, a native XNOR-popcount kernel, export/save/load.

``export(model)`` -> inference model with 1-bit packed binary layers; ``save(exported, path)`` writes
safetensors with a JSON header; ``load(path)`` restores it. Framework models exported in place
(``standalone=False``) go through ``save_state`` / ``restore`` (their adapters: ``esbnn_plugins.mmdet.deploy``,
``esbnn_plugins.diffusers.deploy``). Imports only torch (and safetensors on save/load).
"""
from .export import (KNOWN_CLASSES, export, float16_tensors, load, packed_layers, read_framework, read_header,
                     register_fold, restore, save, save_state)
from .kernel import (LEVELS, REFERENCE, available_levels, binary_conv2d, kernel_level, pack_signs, pack_weight,
                     set_kernel_level)
from .layers import PackedBinaryConv2d, PackedBinaryLinear

__all__ = ["KNOWN_CLASSES", "export", "float16_tensors", "load", "packed_layers", "read_framework", "read_header", "register_fold",
           "restore", "save", "save_state", "LEVELS", "REFERENCE",
           "available_levels", "binary_conv2d", "kernel_level", "pack_signs", "pack_weight", "set_kernel_level",
           "PackedBinaryConv2d", "PackedBinaryLinear"]
