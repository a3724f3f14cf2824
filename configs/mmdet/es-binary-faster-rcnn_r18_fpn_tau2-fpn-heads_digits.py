# ES binary Faster R-CNN, ES (tau = 2) in backbone, FPN and heads (same BOPs as the baseline), digit set: the
# backbone hands its widened stream to the ES FPN. Measured far below the baseline and below ES in the backbone
# only (docs/results/detection.md); kept to show the ES neck and heads at work.
# threshold_spread (ours, as the Fashion-MNIST configs): the FPN and head stacks widen by replication, so
# their first binary layers get identical copies; RSign shifts started at spread thresholds make the copies
# binarize differently (without it ES scored 0.06 mAP, with it 0.03).
_base_ = './es-binary-faster-rcnn_r18_fpn_digits.py'

es = dict(expand_ratio=2, es_groups=1, act_binarizer='rsign', threshold_spread=1.0)
model = dict(
    backbone=dict(**es, reduce_mode='none'), neck=dict(**es, widened_inputs=True), rpn_head=es,
    roi_head=dict(bbox_head=es))
