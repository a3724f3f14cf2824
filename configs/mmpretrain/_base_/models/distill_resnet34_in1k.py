# ImageNet classifier trained by distillation from the MMPretrain model-zoo ResNet-34 (ReActNet's
# teacher; its weights are downloaded when training starts). Configs set model.backbone and head.in_channels.
model = dict(
    type='DistillImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, loss=dict(type='CrossEntropyLoss')),
    teacher=dict(
        model='resnet34_8xb32_in1k',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/'
        'resnet34_8xb32_in1k_20210831-f257d4e6.pth'),
)
