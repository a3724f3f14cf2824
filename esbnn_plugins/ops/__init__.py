"""Framework-free ES-BNN operators: binarizers, ES layers and stream helpers (imports only torch)."""
from .binarizers import (ACTIVATION_BINARIZERS, WEIGHT_BINARIZERS, ApproxSign, ElasticStep, HardSign, HardSignWeight,
                         LearnableBias, RealActivation, RealWeight, RPReLU, RSign, ScaledSignWeight, SignSTE,
                         SignWeight, binary_sign, build_activation_binarizer, build_weight_binarizer)
from .es_layers import ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESLinear
from .matmul import BinaryMatMul
from .stream import REDUCE_MODES, ESExpand, ESReduce, concat, expand, reduce

__all__ = [
    "ACTIVATION_BINARIZERS", "WEIGHT_BINARIZERS", "ApproxSign", "ElasticStep", "HardSign", "HardSignWeight", "LearnableBias",
    "RealActivation", "RealWeight", "RPReLU", "RSign", "ScaledSignWeight", "SignSTE", "SignWeight",
    "binary_sign", "build_activation_binarizer", "build_weight_binarizer",
    "ESBinaryConv2d", "ESBinaryLinear", "ESConv2d", "ESLinear", "BinaryMatMul",
    "REDUCE_MODES", "ESExpand", "ESReduce", "concat", "expand", "reduce",
]
