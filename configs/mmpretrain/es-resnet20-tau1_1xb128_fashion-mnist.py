# Baseline binary ResNet-20 (tau=1, g=1) on Fashion-MNIST, trained in one step from scratch: Bi-Real
# units with ReActNet's RSign (a learnable shift before each sign), mean|W|-scaled sign weights and
# RPReLU; full-precision stem and classifier. ThresholdCalibrationHook starts the shifts from the first
# training batch: the ES variants' tau*tau*g copies of a channel at normal quantiles of that channel's own
# values, the baseline's at its channel means. It was the best option measured on the validation split
# (docs/results/classification.md, "Thresholds calibrated on data"); a run that loads a checkpoint (resume,
# load_from: step 2 of the two-step recipe) keeps the thresholds it loads.
_base_ = './resnet20-fp_1xb128_fashion-mnist.py'

model = dict(backbone=dict(act_binarizer='rsign', weight_binarizer='scaled_sign'))
custom_hooks = [dict(type='ThresholdCalibrationHook')]
