# ES + G binary ResNet-20, tau=2, g=2 (paper Fig. 2c), on Fashion-MNIST: the baseline's BOPs and binary weights.
_base_ = './es-resnet20-tau2_1xb128_fashion-mnist.py'

model = dict(backbone=dict(es_groups=2))
