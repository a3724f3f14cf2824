# ES+G ReActNet-ResNet-18 (tau=2, g=2), step 1; same recipe and teacher as the baseline. The backbone of
# configs/mmdet/es-binary-faster-rcnn_r18_fpn_tau2-g2_voc0712.py starts from its step-2 checkpoint.
_base_ = './es-reactnet-resnet18-tau2_step1_8xb32_in1k.py'

model = dict(backbone=dict(es_groups=2))
