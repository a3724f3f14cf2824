# The digit crops of the digit detection set (python tools/make_digit_detection.py --crops): each real
# MNIST digit of a split drawn on its own 40-80 px patch of photo or noise background, in MMPretrain's
# CustomDataset folder layout (crops/{train,test}/{0..9}/*.jpg; 4,000 train / 1,000 test). Used to
# pretrain detection backbones on the detector's domain; the detector's input normalisation (RGB,
# MMDetection's mean/std) so the pretrained backbone sees the same inputs there.
dataset_type = 'CustomDataset'
data_root = 'data/digit_detection/crops'
data_preprocessor = dict(
    num_classes=10, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.6, 1.0)),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=250,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
