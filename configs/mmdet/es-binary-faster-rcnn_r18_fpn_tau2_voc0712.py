# ES binary Faster R-CNN, ES (tau = 2) in the backbone (same BOPs as the baseline), VOC 07+12: the ES backbone
# hands its nominal outputs to the binary FPN and heads, as in the digit-set configs where this beat the
# baseline and ES also in the FPN and heads did not (docs/results/detection.md).
# Backbone from configs/mmpretrain/es-reactnet-resnet18-tau2_step2_8xb32_in1k.py's checkpoint.
_base_ = './es-binary-faster-rcnn_r18_fpn_voc0712.py'

backbone_checkpoint = 'work_dirs/es-reactnet-resnet18-tau2_step2_8xb32_in1k/epoch_256.pth'
model = dict(backbone=dict(expand_ratio=2, init_cfg=dict(checkpoint=backbone_checkpoint)))
