# ES binary Faster R-CNN: ES binary ResNet-18 (ReActNet binarizers) handing its stage outputs reduced to nominal
# width (reduce_mode='slice') to the binary FPN, binary RPN head and binary shared-FC box head (full-precision
# stem, 1x1 laterals, final cls/reg layers). expand_ratio=es_groups=1 everywhere: the binary baseline
# (BiDet-style detector); ES configs set expand_ratio/es_groups of the backbone. ES in the FPN and heads too:
# backbone reduce_mode='none' + neck widened_inputs=True and the neck/heads' expand_ratio/es_groups
# (…_tau2-fpn-heads_digits.py).
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ESBinaryResNet',
        depth=18,
        act_binarizer='rsign',
        weight_binarizer='scaled_sign',
        out_indices=(0, 1, 2, 3),
        reduce_mode='slice',
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        _delete_=True,
        type='ESBinaryFPN',
        in_channels=[64, 128, 256, 512],
        widened_inputs=False,
        out_channels=256,
        num_outs=5),
    rpn_head=dict(type='ESBinaryRPNHead'),
    roi_head=dict(bbox_head=dict(type='ESBinarySharedFCBBoxHead')))
