# ES + G binary ResNet-20, tau=2, g=2 (paper Fig. 2c): same BOPs and binary weights as the baseline.
_base_ = './es-resnet20-tau2_1xb128_cifar10.py'

model = dict(backbone=dict(es_groups=2))
