# ES binary Faster R-CNN, ES (tau = 2) in the backbone (same BOPs as the baseline), digit set: the ES ResNet-18
# hands its nominal outputs to the binary baseline FPN and heads. ES also in the FPN and heads
# (…_tau2-fpn-heads_digits.py) scored far below the baseline (docs/results/detection.md).
# threshold_spread (ours, as the Fashion-MNIST configs): the copies' RSign thresholds start apart.
_base_ = './es-binary-faster-rcnn_r18_fpn_digits.py'

model = dict(backbone=dict(expand_ratio=2, threshold_spread=1.0))
