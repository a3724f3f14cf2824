# ReActNet-ResNet-18 baseline (tau=1), step 1 of ReActNet's two-step recipe: binary activations
# (RSign), real-valued weights, RPReLU; KL distillation from a real-valued ResNet-34.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py', './_base_/models/distill_resnet34_in1k.py',
    './_base_/schedules/reactnet_adam_256e.py', './_base_/esbnn_runtime.py'
]

model = dict(
    backbone=dict(type='ESBinaryResNet', depth=18, act_binarizer='rsign', weight_binarizer='real'),
    head=dict(in_channels=512),
)
