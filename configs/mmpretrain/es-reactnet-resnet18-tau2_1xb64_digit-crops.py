# Backbone pretraining for the ES (tau=2) digit detection configs: ES ReActNet-ResNet-18 on the digit crops,
# the copies' RSign thresholds started apart (threshold_spread, as the ES detection configs).
_base_ = './reactnet-resnet18_1xb64_digit-crops.py'

model = dict(backbone=dict(expand_ratio=2, threshold_spread=1.0))
