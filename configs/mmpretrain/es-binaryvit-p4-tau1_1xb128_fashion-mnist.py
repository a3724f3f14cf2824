# Baseline binary ViT (tau=1, g=1: BinaryViT's binary layers) on Fashion-MNIST, trained in one step
# from scratch. 28x28 grayscale in 4x4 patches (49 tokens), 4 encoder layers of width 64 (4 heads,
# FFN 256): binary q/k/v/proj and FFN linears (RSign inputs, mean|W|-scaled sign weights, RPReLU),
# binary attention matmuls, average-pooled tokens; full-precision patch embedding and classifier.
# Recipe (ours, as the ResNet-20 configs): Adam 1e-3, cosine, 40 epochs, batch 128.
_base_ = ['./_base_/fashion_mnist.py', './_base_/schedules/adam_cosine.py', './_base_/esbnn_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ESBinaryViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256),
        img_size=28,
        patch_size=4,
        in_channels=1),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
)

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=5e-6))
train_cfg = dict(by_epoch=True, max_epochs=40, val_interval=1)
auto_scale_lr = dict(base_batch_size=128)
