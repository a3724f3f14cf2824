# ES binary ResNet-20, tau=2 (paper Fig. 2b), on Fashion-MNIST: the baseline's BOPs and binary weights.
_base_ = './es-resnet20-tau1_1xb128_fashion-mnist.py'

model = dict(backbone=dict(expand_ratio=2))
