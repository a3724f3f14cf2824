# ES BinaryViT at DeiT-Tiny size, tau=2: ES FFNs only; same recipe and teacher as the baseline.
_base_ = './binaryvit-deit-t_8xb128_in1k.py'

model = dict(backbone=dict(expand_ratio=2))
