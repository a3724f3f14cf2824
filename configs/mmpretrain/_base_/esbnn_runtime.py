# Runtime shared by every ES-BNN classification config: MMPretrain's defaults, plus the plugin
# import (registers backbones, dataset, hooks, ...) and ESRunner (checks dataset paths first).
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['esbnn_plugins.mmpretrain'], allow_failed_imports=False)
runner_type = 'ESRunner'
randomness = dict(seed=0, deterministic=False)
