# ReActNet-ResNet-18 baseline, step 2: binary activations and binary weights, initialised from
# the last step-1 checkpoint; weight decay 0 on the (now binary) latent weights via paramwise_cfg.
_base_ = './reactnet-resnet18_step1_8xb32_in1k.py'

model = dict(backbone=dict(weight_binarizer='scaled_sign'))
load_from = 'work_dirs/reactnet-resnet18_step1_8xb32_in1k/epoch_256.pth'
