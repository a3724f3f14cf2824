import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from esbnn_plugins.compat import _history_buffer_statistic
from mmengine.logging.history_buffer import HistoryBuffer


class TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, targets, mode="loss"):
        pred = self.linear(inputs)
        if mode == "loss":
            return dict(loss=((pred - targets) ** 2).mean())
        return pred


class TinyData(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g)
        return dict(inputs=x, targets=x.sum(0, keepdim=True))


def make_runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=TinyModel(), work_dir=str(work_dir), experiment_name=f"resume_{max_epochs}_{resume}",
        train_dataloader=dict(dataset=TinyData(), sampler=dict(type="DefaultSampler", shuffle=True), batch_size=4,
                              collate_fn=dict(type="default_collate")),
        optim_wrapper=dict(optimizer=dict(type="Adam", lr=0.01)), train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)), randomness=dict(seed=0),
        resume=resume, default_scope="mmengine")


def test_runner_resumes_from_its_own_checkpoint(tmp_path):
    first = make_runner(tmp_path, max_epochs=1)
    first.train()
    ckpt = torch.load(tmp_path / "epoch_1.pth")  # torch's default weights_only=True
    assert isinstance(ckpt["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)
    first_bytes = (tmp_path / "epoch_1.pth").read_bytes()
    second = make_runner(tmp_path, max_epochs=2, resume=True)
    second.train()
    assert second.epoch == 2
    # resumed, not retrained: epoch 1 was not run (nor saved) again
    assert (tmp_path / "epoch_1.pth").read_bytes() == first_bytes
    resumed = torch.load(tmp_path / "epoch_2.pth")
    assert resumed["meta"]["epoch"] == 2 and resumed["meta"]["iter"] == 4
    for key, value in ckpt["state_dict"].items():
        assert not torch.equal(value, resumed["state_dict"][key])  # the second epoch really trained


def test_unpickling_getattr_is_restricted():
    assert _history_buffer_statistic(HistoryBuffer, "mean") is HistoryBuffer.mean
    with pytest.raises(ValueError, match="only HistoryBuffer statistics methods"):
        _history_buffer_statistic(HistoryBuffer, "__init__")
    with pytest.raises(ValueError, match="only HistoryBuffer statistics methods"):
        _history_buffer_statistic(torch.nn.Module, "min")
