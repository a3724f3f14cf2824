# ES binary RetinaNet: the ES binary ResNet-18 and binary FPN of the Faster R-CNN configs (P3-P7, extra levels
# by strided binary units) and a binary RetinaNet head (full-precision final convs); ES settings as there.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

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
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5),
    bbox_head=dict(type='ESBinaryRetinaHead'))
