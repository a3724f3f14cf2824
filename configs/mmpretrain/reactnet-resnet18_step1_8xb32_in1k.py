# ReActNet-ResNet-18 baseline (tau=1), step 1 of ReActNet's two-step recipe: binary activations
# (RSign), real-valued weights, RPReLU; KL distillation from a real-valued ResNet-34.
# Recipe (ReActNet): Adam lr 1.25e-3 (batch 256) decayed linearly to 0, 256 epochs, weight decay 1e-5.
# The teacher checkpoint is the MMPretrain model-zoo ResNet-34 (downloaded on first use).
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py', './_base_/esbnn_runtime.py']

model = dict(
    type='DistillImageClassifier',
    backbone=dict(type='ESBinaryResNet', depth=18, expand_ratio=1, groups=1, act_binarizer='rsign',
                  weight_binarizer='real', activation='rprelu'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=512, loss=dict(type='CrossEntropyLoss')),
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
