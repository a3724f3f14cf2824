# ES binary ResNet-20, tau=3, on Fashion-MNIST at stage widths 24-48-96: the baseline's BOPs and binary
# weights (es-resnet20-w24-tau1). The ES setting with the largest mean gain over its baseline measured
# (docs/results/classification.md, "widths 24-48-96"), under a point.
_base_ = './es-resnet20-w24-tau1_1xb128_fashion-mnist.py'

model = dict(backbone=dict(expand_ratio=3))
