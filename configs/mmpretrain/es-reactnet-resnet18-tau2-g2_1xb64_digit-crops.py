# Backbone pretraining for the ES+G (tau=2, g=2) digit detection configs: ES+G ReActNet-ResNet-18 on the digit
# crops (the tau=2 pretraining's settings).
_base_ = './es-reactnet-resnet18-tau2_1xb64_digit-crops.py'

model = dict(backbone=dict(es_groups=2))
