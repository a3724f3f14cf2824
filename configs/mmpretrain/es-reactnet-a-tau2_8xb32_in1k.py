# ES ReActNet-A (tau=2): same BOPs and binary weights as ReActNet-A; same recipe.
_base_ = './reactnet-a_8xb32_in1k.py'

model = dict(backbone=dict(expand_ratio=2))
