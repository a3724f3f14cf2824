# Baseline binary ResNet-20 (tau=1, g=1) on Fashion-MNIST, trained in one step from scratch: Bi-Real
# units (ApproxSign activations, mean|W|-scaled sign weights, RPReLU), full-precision stem and classifier.
_base_ = './resnet20-fp_1xb128_fashion-mnist.py'

model = dict(backbone=dict(act_binarizer='approx_sign', weight_binarizer='scaled_sign'))
