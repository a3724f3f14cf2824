# Baseline binary ResNet-20 (tau=1, g=1) on CIFAR-10: Bi-Real units (one binary 3x3 conv per
# residual, ApproxSign activations, mean|W|-scaled sign weights, RPReLU), FP stem and classifier.
# Recipe (ours; the paper gives none for CIFAR): Adam 1e-3, cosine, 200 epochs, batch 128,
# weight decay 5e-6 except on latent binary weights. Data: CIFAR-10 python version in data/cifar10.
_base_ = ['mmpretrain::_base_/datasets/cifar10_bs16.py', './_base_/schedules/adam_cosine.py',
          './_base_/esbnn_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ESBinaryResNet', depth=20),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
)

train_dataloader = dict(batch_size=128, dataset=dict(download=False))
val_dataloader = dict(batch_size=128, dataset=dict(download=False))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=5e-6))
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=5)
auto_scale_lr = dict(base_batch_size=128)
