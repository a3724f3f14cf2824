# ReActNet-A baseline (tau=1): MobileNet-v1 layout, RSign + RPReLU, duplicated 1x1 at downsampling,
# binary weights from the start; ReActNet's recipe and ResNet-34 teacher.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py', './_base_/models/distill_resnet34_in1k.py',
    './_base_/schedules/reactnet_adam_256e.py', './_base_/esbnn_runtime.py'
]

model = dict(backbone=dict(type='ESReActNet'), head=dict(in_channels=1024))
