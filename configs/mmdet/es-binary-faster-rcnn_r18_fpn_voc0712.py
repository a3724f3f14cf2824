# ES binary Faster R-CNN (ResNet-18 + FPN), binary baseline (expand_ratio = es_groups = 1), PASCAL VOC 07+12
# trainval -> VOC07 test (BiDet's setting). The backbone starts from this project's MMPretrain checkpoint of
# the same network (configs/mmpretrain/reactnet-resnet18_step2_8xb32_in1k.py); another file:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = [
    './_base_/models/es-binary-faster-rcnn_r18_fpn.py', 'mmdet::_base_/datasets/voc0712.py',
    './_base_/schedules/adam_voc0712.py', './_base_/esbnn_det_runtime.py'
]

backbone_checkpoint = 'work_dirs/reactnet-resnet18_step2_8xb32_in1k/epoch_256.pth'
model = dict(
    backbone=dict(
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=backbone_checkpoint, prefix='backbone.')),
    roi_head=dict(bbox_head=dict(num_classes=20)))
