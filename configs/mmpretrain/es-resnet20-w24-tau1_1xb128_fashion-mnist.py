# Baseline binary ResNet-20 (tau=1) on Fashion-MNIST at stage widths 24-48-96 instead of 16-32-64 (2.25x
# the BOPs): the reference of es-resnet20-w24-tau3, whose widths must be divisible by tau=3.
_base_ = './es-resnet20-tau1_1xb128_fashion-mnist.py'

model = dict(backbone=dict(widths=(24, 48, 96)), head=dict(in_channels=96))
