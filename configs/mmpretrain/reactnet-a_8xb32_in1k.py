# ReActNet-A baseline (tau=1): MobileNet-v1 layout, RSign + RPReLU, duplicated 1x1 at downsampling;
# KL distillation from the model-zoo ResNet-34. Recipe as ReActNet-ResNet-18 step 2 (binary weights
# from the start): Adam lr 1.25e-3 linear decay, 256 epochs, batch 256.
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py', './_base_/esbnn_runtime.py']

model = dict(
    type='DistillImageClassifier',
    backbone=dict(type='ESReActNet', expand_ratio=1, groups=1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1024, loss=dict(type='CrossEntropyLoss')),
    teacher=dict(
        model='resnet34_8xb32_in1k',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/'
        'resnet34_8xb32_in1k_20210831-f257d4e6.pth'),
)

optim_wrapper = dict(
    constructor='ESOptimWrapperConstructor',
    optimizer=dict(type='Adam', lr=1.25e-3, weight_decay=1e-5),
    paramwise_cfg=dict(binary_weight_decay_mult=0.),
)
param_scheduler = dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=True, convert_to_iter_based=True)
train_cfg = dict(by_epoch=True, max_epochs=256, val_interval=4)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)
