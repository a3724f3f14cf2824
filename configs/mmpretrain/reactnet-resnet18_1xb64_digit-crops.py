# Backbone pretraining for the digit detection configs (configs/mmdet/*_digits.py), binary baseline:
# ReActNet-ResNet-18 (RSign activations, mean|W|-scaled sign weights, one step from scratch) classifying
# the digit crops. The detector then starts from its checkpoint (tools/demo_det.py,
# tools/benchmark_detection.py: init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')).
_base_ = ['./_base_/digit_crops.py', './_base_/schedules/adam_cosine.py', './_base_/esbnn_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ESBinaryResNet', depth=18, act_binarizer='rsign', weight_binarizer='scaled_sign'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=512, loss=dict(type='CrossEntropyLoss')),
)

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=1e-5))
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
default_hooks = dict(logger=dict(type='LoggerHook', interval=20))
