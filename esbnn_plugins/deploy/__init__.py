"""Real 1-bit deployment (issue 11): packed binary layers, a native XNOR-popcount kernel, export/save/load."""
from .kernel import (LEVELS, REFERENCE, available_levels, binary_conv2d, kernel_level, pack_signs, pack_weight,
                     set_kernel_level)

__all__ = ["LEVELS", "REFERENCE", "available_levels", "binary_conv2d", "kernel_level", "pack_signs", "pack_weight",
           "set_kernel_level"]
