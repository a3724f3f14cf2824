# Two-step recipe, step 2 (baseline, tau=1): binary activations and weights, initialised from step 1's
# last checkpoint, distilled from the same teacher; no weight decay on the latent binary weights.
_base_ = './es-resnet20-tau1_kd-step1_1xb128_fashion-mnist.py'

step1_config = 'configs/mmpretrain/es-resnet20-tau1_kd-step1_1xb128_fashion-mnist.py'
model = dict(backbone=dict(weight_binarizer='scaled_sign'))
load_from = 'work_dirs/es-resnet20-tau1_kd-step1_1xb128_fashion-mnist/epoch_40.pth'
