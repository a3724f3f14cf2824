# Baseline binary ResNet-20 (tau=1, g=1) on Fashion-MNIST, trained in one step from scratch: Bi-Real
# units with ReActNet's RSign (a learnable shift before each sign), mean|W|-scaled sign weights and
# RPReLU; full-precision stem and classifier. threshold_spread starts the shifts of the ES variants'
# tau*tau*g copies at spread thresholds (no effect at tau=g=1); it was the best ES option measured on the
# validation split (docs/results/classification.md, "ES design options"), and RSign alone does not
# change the baseline there.
_base_ = './resnet20-fp_1xb128_fashion-mnist.py'

model = dict(backbone=dict(act_binarizer='rsign', weight_binarizer='scaled_sign', threshold_spread=1.0))
