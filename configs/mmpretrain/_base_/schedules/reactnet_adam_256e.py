# ReActNet's recipe: Adam lr 1.25e-3 for batch 256, decayed linearly to 0 over 256 epochs, weight
# decay 1e-5 except on latent binary weights (which step 2 of the two-step recipe makes binary).
optim_wrapper = dict(
    constructor='ESOptimWrapperConstructor',
    optimizer=dict(type='Adam', lr=1.25e-3, weight_decay=1e-5),
    paramwise_cfg=dict(binary_weight_decay_mult=0.),
)
param_scheduler = dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=True, convert_to_iter_based=True)
train_cfg = dict(by_epoch=True, max_epochs=256, val_interval=4)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)
