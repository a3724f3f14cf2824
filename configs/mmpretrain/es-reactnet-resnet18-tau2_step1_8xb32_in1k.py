# ES ReActNet-ResNet-18 (tau=2), step 1; same recipe and teacher as the baseline.
_base_ = './reactnet-resnet18_step1_8xb32_in1k.py'

model = dict(backbone=dict(expand_ratio=2))
