# ES BNext-T (tau=2): same BOPs and binary weights as BNext-T; same recipe and annealing.
_base_ = './bnext-t_8xb64_in1k.py'

model = dict(backbone=dict(expand_ratio=2))
