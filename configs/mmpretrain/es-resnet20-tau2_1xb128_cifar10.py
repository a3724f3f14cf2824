# ES binary ResNet-20, tau=2 (paper Fig. 2b): same BOPs and binary weights as the baseline.
_base_ = './es-resnet20-tau1_1xb128_cifar10.py'

model = dict(backbone=dict(expand_ratio=2))
