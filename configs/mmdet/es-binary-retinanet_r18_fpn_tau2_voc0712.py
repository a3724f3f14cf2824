# ES binary RetinaNet (one stage), ES (tau = 2) backbone, FPN and head, VOC 07+12 -> VOC07 test, with
# MMDetection's RetinaNet VOC data settings and the ES backbone checkpoint of the Faster R-CNN configs.
# threshold_spread (ours): RSign thresholds of the copies start apart in the replicated FPN/head stacks
# (see es-binary-faster-rcnn_r18_fpn_tau2_digits.py).
_base_ = [
    './_base_/models/es-binary-retinanet_r18_fpn.py', 'mmdet::_base_/datasets/voc0712.py',
    './_base_/schedules/adam_voc0712.py', './_base_/esbnn_det_runtime.py'
]

backbone_checkpoint = 'work_dirs/es-reactnet-resnet18-tau2_step2_8xb32_in1k/epoch_256.pth'
es = dict(expand_ratio=2, es_groups=1, act_binarizer='rsign', threshold_spread=1.0)
model = dict(
    backbone=dict(
        **es,
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=backbone_checkpoint, prefix='backbone.')),
    neck=es,
    bbox_head=dict(**es, num_classes=20))
