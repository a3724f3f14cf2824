# ES BinaryViT at DeiT-Small size, tau=2: ES FFNs only (the paper's ES BinaryViT); the baseline's
# BOPs, binary weights and attention; same recipe and teacher.
_base_ = './binaryvit-deit-s_8xb128_in1k.py'

model = dict(backbone=dict(expand_ratio=2))
