# Backbone pretraining for the ES+G (tau=2, g=2) digit detection configs: ES+G ReActNet-ResNet-18 on the digit crops.
_base_ = './reactnet-resnet18_1xb64_digit-crops.py'

model = dict(backbone=dict(expand_ratio=2, es_groups=2))
