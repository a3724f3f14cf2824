# ES binary Faster R-CNN, binary baseline (expand_ratio = es_groups = 1), on the MNIST digit detection set
# (python tools/make_digit_detection.py), trained on CPU: FPN and heads at half width, anchors from 16 px
# (digits are 12-100 px at the set's 192 px scale), proposal/RoI counts sized for images holding at most a
# few objects.
_base_ = [
    './_base_/models/es-binary-faster-rcnn_r18_fpn.py', './_base_/datasets/digits_voc.py',
    './_base_/schedules/adam_digits.py', './_base_/esbnn_det_runtime.py'
]

model = dict(
    neck=dict(out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=10)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))
