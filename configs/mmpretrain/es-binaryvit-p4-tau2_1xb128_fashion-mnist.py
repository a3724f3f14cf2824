# ES binary ViT, tau=2, on Fashion-MNIST: only the FFNs are widened (METHOD.md section 4); the
# baseline's BOPs, binary weights and attention.
_base_ = './es-binaryvit-p4-tau1_1xb128_fashion-mnist.py'

model = dict(backbone=dict(expand_ratio=2))
