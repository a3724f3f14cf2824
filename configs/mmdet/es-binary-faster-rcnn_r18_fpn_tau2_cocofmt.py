# ES binary faster-rcnn (tau = 2; ResNet-18 + FPN) on any COCO-format data set (CocoDataset, CocoMetric).
# For your own data change only the lines between the markers: paths and class names (in the order of
# the annotation file's categories). The defaults read the digit set of tools/make_digit_detection.py.
# ES in the backbone, binary FPN and heads (see es-binary-faster-rcnn_r18_fpn_tau2_digits.py); threshold_spread
# (ours): the copies' RSign thresholds start apart.
_base_ = [
    './_base_/models/es-binary-faster-rcnn_r18_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    './_base_/schedules/adam_digits.py', './_base_/esbnn_det_runtime.py'
]

# ---- your data ----
data_root = 'data/digit_detection/'
train_ann_file = 'annotations/instances_train.json'
val_ann_file = 'annotations/instances_test.json'
train_img_prefix = 'VOCdevkit/VOC2007/JPEGImages/'
val_img_prefix = 'VOCdevkit/VOC2007/JPEGImages/'
classes = ('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')
# -------------------

metainfo = dict(classes=classes)
train_dataloader = dict(
    dataset=dict(
        data_root=data_root, metainfo=metainfo, ann_file=train_ann_file, data_prefix=dict(img=train_img_prefix)))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root, metainfo=metainfo, ann_file=val_ann_file, data_prefix=dict(img=val_img_prefix)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator

model = dict(backbone=dict(expand_ratio=2, threshold_spread=1.0), roi_head=dict(bbox_head=dict(num_classes=len(classes))))
