"""Framework-free ES-BNN networks (plain ``nn.Module``, imports only torch)."""
from .bnext import BNextBlock, BNextPart, ESBNext
from .reactnet import MOBILENET_WIDTHS, ESReActNet, ReActBlock, mobilenet_layout
from .transformer import TOKEN_ACTIVATIONS, BinaryAttention, BinaryLinearUnit, ESFFN, feature_shortcut
from .resnet import ARCHS, BLOCK_ACTIVATIONS, ESBinaryResNet, ESBinaryUnit, build_block_activation, resnet18, resnet20

__all__ = ["ARCHS", "BLOCK_ACTIVATIONS", "ESBinaryResNet", "ESBinaryUnit", "build_block_activation",
           "resnet18", "resnet20", "MOBILENET_WIDTHS", "ESReActNet", "ReActBlock", "mobilenet_layout",
           "BNextBlock", "BNextPart", "ESBNext", "TOKEN_ACTIVATIONS", "BinaryAttention", "BinaryLinearUnit", "ESFFN",
           "feature_shortcut"]
