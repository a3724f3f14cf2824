# ES binary Faster R-CNN: ES binary ResNet-18 (ReActNet binarizers) handing its widened ES stream to the
# ES binary FPN, ES binary RPN head and ES binary shared-FC box head (full-precision stem, 1x1 laterals,
# final cls/reg layers). expand_ratio=es_groups=1 everywhere: the binary baseline (BiDet-style detector).
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ESBinaryResNet',
        depth=18,
        act_binarizer='rsign',
        weight_binarizer='scaled_sign',
        out_indices=(0, 1, 2, 3),
        reduce_mode='none',
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        _delete_=True,
        type='ESBinaryFPN',
        in_channels=[64, 128, 256, 512],
        widened_inputs=True,
        out_channels=256,
        num_outs=5),
    rpn_head=dict(type='ESBinaryRPNHead'),
    roi_head=dict(bbox_head=dict(type='ESBinarySharedFCBBoxHead')))
