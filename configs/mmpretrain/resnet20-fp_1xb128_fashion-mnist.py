# Full-precision ResNet-20 on Fashion-MNIST: the binary networks' layout (same units, stem, RPReLU)
# with real activations and weights. The reference for the binary results and the teacher of the
# two-step recipe (`*_kd-step*` configs). Recipe (ours): Adam 1e-3, cosine, 40 epochs, batch 128.
_base_ = ['./_base_/fashion_mnist.py', './_base_/schedules/adam_cosine.py', './_base_/esbnn_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ESBinaryResNet', depth=20, in_channels=1, act_binarizer='real', weight_binarizer='real'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
)

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=5e-6))
train_cfg = dict(by_epoch=True, max_epochs=40, val_interval=1)
auto_scale_lr = dict(base_batch_size=128)
