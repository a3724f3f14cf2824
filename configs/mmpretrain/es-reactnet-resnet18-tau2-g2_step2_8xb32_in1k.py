# ES+G ReActNet-ResNet-18 (tau=2, g=2), step 2: binary weights, initialised from the ES+G step-1 checkpoint.
_base_ = './es-reactnet-resnet18-tau2-g2_step1_8xb32_in1k.py'

model = dict(backbone=dict(weight_binarizer='scaled_sign'))
load_from = 'work_dirs/es-reactnet-resnet18-tau2-g2_step1_8xb32_in1k/epoch_256.pth'
