"""Framework-free ES-BNN networks (plain ``nn.Module``, imports only torch)."""
from .resnet import ARCHS, BLOCK_ACTIVATIONS, ESBinaryResNet, ESBinaryUnit, build_block_activation, resnet18, resnet20

__all__ = ["ARCHS", "BLOCK_ACTIVATIONS", "ESBinaryResNet", "ESBinaryUnit", "build_block_activation",
           "resnet18", "resnet20"]
