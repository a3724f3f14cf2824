# ES binary Faster R-CNN, ES + G (tau = 2, g = 2) in the backbone (same BOPs as the baseline), digit set; the
# other settings of the tau = 2 config.
_base_ = './es-binary-faster-rcnn_r18_fpn_tau2_digits.py'

model = dict(backbone=dict(es_groups=2))
