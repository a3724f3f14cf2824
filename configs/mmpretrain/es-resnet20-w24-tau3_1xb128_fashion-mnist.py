# ES binary ResNet-20, tau=3, on Fashion-MNIST at stage widths 24-48-96: the baseline's BOPs and binary
# weights (es-resnet20-w24-tau1). Its gain over that baseline, measured in docs/results/classification.md
# ("widths 24-48-96"), is under a point and level on validation in full fp32.
_base_ = './es-resnet20-w24-tau1_1xb128_fashion-mnist.py'

model = dict(backbone=dict(expand_ratio=3))
