# BinaryViT baseline (tau=1) at DeiT-Small size: binary q/k/v/proj and FFN linears, binary attention
# matmuls (softmax output binarized to {0, alpha}), average-pooled tokens instead of a class token;
# full-precision patch embedding and classifier. Recipe (DeiT, as BinaryViT trains): AdamW lr 5e-4 per
# 512 images, weight decay 0.05 (none on norms, biases, the position embedding and latent binary
# weights), 5 warm-up epochs then cosine, 300 epochs, batch 1024, DeiT's augmentation (RandAugment,
# random erasing, Mixup, CutMix); distillation (KL) from the real-valued DeiT-Small of the MMPretrain
# model zoo (its weights are downloaded when training starts; same input normalisation).
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py', './_base_/esbnn_runtime.py']

model = dict(
    type='DistillImageClassifier',
    backbone=dict(type='ESBinaryViT', arch='deit-small', img_size=224, patch_size=16),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=384, loss=dict(type='CrossEntropyLoss')),
    teacher=dict(
        model='deit-small_4xb256_in1k',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/deit/'
        'deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth'),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

train_dataloader = dict(batch_size=128)

optim_wrapper = dict(
    constructor='ESOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        binary_weight_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=4)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
