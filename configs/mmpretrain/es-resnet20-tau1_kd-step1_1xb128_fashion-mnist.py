# The paper's two-step recipe (ReActNet's, METHOD.md section 5) on Fashion-MNIST, baseline (tau=1).
# Step 1: binary activations, real weights, KL distillation from the full-precision ResNet-20 trained by
# resnet20-fp_1xb128_fashion-mnist.py (its last checkpoint). `tools/train_two_step.py` runs teacher,
# step 1 and step 2 in order, each resumable.
_base_ = './es-resnet20-tau1_1xb128_fashion-mnist.py'

model = dict(
    type='DistillImageClassifier',
    backbone=dict(weight_binarizer='real'),
    teacher=dict(model='configs/mmpretrain/resnet20-fp_1xb128_fashion-mnist.py',
                 checkpoint='work_dirs/resnet20-fp_1xb128_fashion-mnist/epoch_40.pth'),
)
