# ES binary RetinaNet (one stage), ES (tau = 2) in the backbone, binary FPN and head, digit set, trained on CPU;
# anchors from 16 px (digits are 12-100 px at the set's 192 px scale). threshold_spread (ours): the copies'
# RSign thresholds start apart (see es-binary-faster-rcnn_r18_fpn_tau2_digits.py).
_base_ = [
    './_base_/models/es-binary-retinanet_r18_fpn.py', './_base_/datasets/digits_voc.py',
    './_base_/schedules/adam_digits.py', './_base_/esbnn_det_runtime.py'
]

model = dict(
    backbone=dict(expand_ratio=2, threshold_spread=1.0),
    neck=dict(out_channels=128),
    bbox_head=dict(in_channels=128, feat_channels=128, stacked_convs=2, num_classes=10,
                   anchor_generator=dict(octave_base_scale=2)))
