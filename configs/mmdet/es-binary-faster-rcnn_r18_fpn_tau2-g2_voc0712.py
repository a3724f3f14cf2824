# ES binary Faster R-CNN, ES + G (tau = 2, g = 2) in backbone, FPN and heads (same BOPs as the baseline),
# VOC 07+12. The backbone checkpoint is an MMPretrain ES ResNet-18 trained with the same tau and g.
# threshold_spread (ours): RSign thresholds of the copies start apart in the replicated FPN/head stacks
# (see es-binary-faster-rcnn_r18_fpn_tau2_digits.py).
_base_ = './es-binary-faster-rcnn_r18_fpn_voc0712.py'

backbone_checkpoint = 'work_dirs/es-reactnet-resnet18-tau2-g2_step2_8xb32_in1k/epoch_256.pth'
es = dict(expand_ratio=2, es_groups=2, act_binarizer='rsign', threshold_spread=1.0)
model = dict(
    backbone=dict(**es, init_cfg=dict(checkpoint=backbone_checkpoint)),
    neck=es,
    rpn_head=es,
    roi_head=dict(bbox_head=es))
