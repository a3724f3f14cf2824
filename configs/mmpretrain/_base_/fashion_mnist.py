# Fashion-MNIST (real 28x28 grayscale photos of clothing, 10 classes) from the official idx files in
# data/fashion-mnist (`make data`). 55,000 train / 5,000 validation (the last 500 train images of
# each class, used for every choice) / 10,000 test. Elsewhere: set data_root of the three dataloaders
# (--cfg-options train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR
# test_dataloader.dataset.data_root=DIR).
dataset_type = 'FashionMNISTSplit'
data_root = 'data/fashion-mnist'
data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=500,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = dict(
    batch_size=500,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = val_evaluator
