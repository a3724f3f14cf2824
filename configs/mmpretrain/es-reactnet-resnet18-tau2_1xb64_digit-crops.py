# Backbone pretraining for the ES (tau=2) digit detection configs: ES ReActNet-ResNet-18 on the digit crops.
_base_ = './reactnet-resnet18_1xb64_digit-crops.py'

model = dict(backbone=dict(expand_ratio=2))
