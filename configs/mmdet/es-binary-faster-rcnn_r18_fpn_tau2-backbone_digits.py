# ES binary Faster R-CNN with ES (tau = 2) in the backbone only: the backbone hands the binary baseline FPN
# and heads its nominal outputs (reduce_mode='slice'), digit set; same BOPs as the baseline.
_base_ = './es-binary-faster-rcnn_r18_fpn_digits.py'

model = dict(backbone=dict(expand_ratio=2, threshold_spread=1.0, reduce_mode='slice'), neck=dict(widened_inputs=False))
