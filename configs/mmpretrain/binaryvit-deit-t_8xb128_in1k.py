# BinaryViT baseline (tau=1) at DeiT-Tiny size; recipe of the DeiT-Small config, distilled from the
# real-valued DeiT-Tiny of the MMPretrain model zoo.
_base_ = './binaryvit-deit-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='deit-tiny'),
    head=dict(in_channels=192),
    teacher=dict(
        model='deit-tiny_4xb256_in1k',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/deit/'
        'deit-tiny_pt-4xb256_in1k_20220218-13b382a0.pth'),
)
