# ES binary Faster R-CNN, ES + G (tau = 2, g = 2) in the backbone (same BOPs as the baseline), VOC 07+12; the
# other settings of the tau = 2 config. The backbone checkpoint is an MMPretrain ES ResNet-18 trained with the
# same tau and g.
_base_ = './es-binary-faster-rcnn_r18_fpn_tau2_voc0712.py'

backbone_checkpoint = 'work_dirs/es-reactnet-resnet18-tau2-g2_step2_8xb32_in1k/epoch_256.pth'
model = dict(backbone=dict(es_groups=2, init_cfg=dict(checkpoint=backbone_checkpoint)))
