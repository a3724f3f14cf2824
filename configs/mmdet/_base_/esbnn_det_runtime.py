# Runtime of every ES-BNN detection config: MMDetection's defaults, plus the plugin import, ESRunner
# (checks dataset paths first; runs `--launcher pytorch` on CPU with gloo) and a checkpoint every
# epoch (the last 3 and the best kept).
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['esbnn_plugins.mmdet'], allow_failed_imports=False)
runner_type = 'ESRunner'
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))
randomness = dict(seed=0)
