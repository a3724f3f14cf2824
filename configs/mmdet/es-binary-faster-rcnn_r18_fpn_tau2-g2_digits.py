# ES binary Faster R-CNN, ES + G (tau = 2, g = 2) in backbone, FPN and heads (same BOPs as the baseline),
# digit set; the ES settings of the tau = 2 config.
_base_ = './es-binary-faster-rcnn_r18_fpn_tau2_digits.py'

es = dict(es_groups=2)
model = dict(backbone=es, neck=es, rpn_head=es, roi_head=dict(bbox_head=es))
