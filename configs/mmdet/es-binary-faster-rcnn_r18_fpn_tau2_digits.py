# ES binary Faster R-CNN, ES (tau = 2) in backbone, FPN and heads (same BOPs as the baseline), digit set.
# threshold_spread (ours, as the Fashion-MNIST configs): the FPN and head stacks widen by replication, so
# their first binary layers get identical copies; RSign shifts started at spread thresholds make the copies
# binarize differently (without it ES scored 0.06 mAP against the baseline's 0.58, docs/results/detection.md).
_base_ = './es-binary-faster-rcnn_r18_fpn_digits.py'

es = dict(expand_ratio=2, es_groups=1, act_binarizer='rsign', threshold_spread=1.0)
model = dict(backbone=es, neck=es, rpn_head=es, roi_head=dict(bbox_head=es))
