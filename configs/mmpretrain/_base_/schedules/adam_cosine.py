# Adam with cosine decay to the end of training (max_epochs), no weight decay on latent binary
# weights. Configs set the learning rate, weight decay and train_cfg.
optim_wrapper = dict(
    constructor='ESOptimWrapperConstructor',
    optimizer=dict(type='Adam', lr=1e-3, weight_decay=0.),
    paramwise_cfg=dict(binary_weight_decay_mult=0.),
)
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, convert_to_iter_based=True)
val_cfg = dict()
test_cfg = dict()
