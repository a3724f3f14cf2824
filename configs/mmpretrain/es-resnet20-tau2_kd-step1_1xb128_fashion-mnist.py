# Two-step recipe, step 1, ES, tau=2: binary activations, real weights, distilled from the
# full-precision ResNet-20 (see es-resnet20-tau1_kd-step1_1xb128_fashion-mnist.py).
_base_ = './es-resnet20-tau1_kd-step1_1xb128_fashion-mnist.py'

model = dict(backbone=dict(expand_ratio=2))
