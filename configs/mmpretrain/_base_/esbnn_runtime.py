# Runtime shared by every ES-BNN classification config: MMPretrain's defaults, plus the plugin
# import (registers backbones, dataset, hooks, ...), ESRunner (checks dataset paths first, the head
# before training, warns when --resume finds no checkpoint) and checkpoints: one every epoch, the
# last 3 kept, plus the best by validation top-1 (best_accuracy_top1_epoch_N.pth).
_base_ = 'mmpretrain::_base_/default_runtime.py'

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='accuracy/top1', rule='greater'))

custom_imports = dict(imports=['esbnn_plugins.mmpretrain'], allow_failed_imports=False)
runner_type = 'ESRunner'
randomness = dict(seed=0, deterministic=False)
