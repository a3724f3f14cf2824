# Two-step recipe, step 2, ES + G, tau=2, g=2: fully binary, initialised from step 1's last checkpoint.
_base_ = './es-resnet20-tau1_kd-step2_1xb128_fashion-mnist.py'

step1_config = 'configs/mmpretrain/es-resnet20-tau2-g2_kd-step1_1xb128_fashion-mnist.py'
model = dict(backbone=dict(expand_ratio=2, es_groups=2))
load_from = 'work_dirs/es-resnet20-tau2-g2_kd-step1_1xb128_fashion-mnist/epoch_40.pth'
