# ES binary RetinaNet (one stage), ES (tau = 2) in the backbone, binary FPN and head, VOC 07+12 -> VOC07 test,
# with MMDetection's RetinaNet VOC data settings and the ES backbone checkpoint of the Faster R-CNN configs.
_base_ = [
    './_base_/models/es-binary-retinanet_r18_fpn.py', 'mmdet::_base_/datasets/voc0712.py',
    './_base_/schedules/adam_voc0712.py', './_base_/esbnn_det_runtime.py'
]

backbone_checkpoint = 'work_dirs/es-reactnet-resnet18-tau2_step2_8xb32_in1k/epoch_256.pth'
model = dict(
    backbone=dict(
        expand_ratio=2,
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=backbone_checkpoint, prefix='backbone.')),
    bbox_head=dict(num_classes=20))
