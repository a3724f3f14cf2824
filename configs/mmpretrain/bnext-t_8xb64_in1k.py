# BNext-T baseline (tau=1): HardSign activations, progressive (temperature-annealed) HardSign
# weights, ELM-Attention, information recoupling gates. Recipe (BNext): AdamW lr 1e-3, cosine with
# 5 warm-up epochs, 512 epochs, batch 512; distillation (here from one teacher: the model-zoo
# ConvNeXt-T, which shares the student's input normalisation) plus the label loss; the HardSign
# temperatures are annealed every epoch.
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs64.py', './_base_/esbnn_runtime.py']

model = dict(
    type='DistillImageClassifier',
    backbone=dict(type='ESBNext'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1024, loss=dict(type='CrossEntropyLoss')),
    teacher=dict(
        model='convnext-tiny_32xb128_in1k',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/convnext/'
        'convnext-tiny_32xb128_in1k_20221207-998cf3e9.pth'),
    use_cls_loss=True,
)

optim_wrapper = dict(
    constructor='ESOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-8),
    paramwise_cfg=dict(binary_weight_decay_mult=0.),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=512, val_interval=4)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)

custom_hooks = [dict(type='TemperatureAnnealingHook', end_temperature=1e-3)]
