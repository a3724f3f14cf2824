# ES binary Faster R-CNN, ES + G (tau = 2, g = 2) in backbone, FPN and heads (same BOPs as the baseline), digit set.
_base_ = './es-binary-faster-rcnn_r18_fpn_digits.py'

es = dict(expand_ratio=2, es_groups=2)
model = dict(backbone=es, neck=es, rpn_head=es, roi_head=dict(bbox_head=es))
