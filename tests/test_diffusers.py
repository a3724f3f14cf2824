"""ESBinarySRUNet and ESBinarySRPipeline: shapes, timestep banks, fused ES path, complexity, round trips, inputs,
errors."""
import copy

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, EulerDiscreteScheduler, ImagePipelineOutput
from diffusers.models.unets.unet_2d import UNet2DOutput

import diffusers
import esbnn_plugins.diffusers as es_diffusers
from esbnn_plugins.analysis import complexity
from esbnn_plugins.diffusers import ESBinarySRPipeline, ESBinarySRUNet
from esbnn_plugins.diffusers.blocks import BinaryConvUnit, FullPrecisionConvUnit
from esbnn_plugins.ops import ESBinaryConv2d, ESConv2d
from fused_checks import assert_same_run, forward_backward

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=2, num_train_timesteps=100)

pytestmark = pytest.mark.usefixtures("one_thread")



def tiny_unet(**kwargs) -> ESBinarySRUNet:
    return ESBinarySRUNet(**{**TINY, **kwargs})


def tiny_pipe(upscale_factor=2, **kwargs) -> ESBinarySRPipeline:
    pipe = ESBinarySRPipeline(tiny_unet(**kwargs), upscale_factor=upscale_factor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def public_config(model) -> dict:
    """The recorded ``__init__`` arguments, tuples as the lists JSON gives back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items() if not k.startswith("_")}


def run(pipe, image, seed=0, steps=3, output_type="np"):
    return pipe(image, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                output_type=output_type).images


# ----------------------------------------------------------------------------------------------- UNet
@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_unet_output_shape_any_size(tau, g):
    unet = tiny_unet(expand_ratio=tau, es_groups=g, block_out_channels=(8, 16, 16))
    for size in [(16, 16), (9, 13), (1, 7)]:
        out = unet(torch.randn(2, 6, *size), torch.tensor([0, 99]))
        assert isinstance(out, UNet2DOutput)
        assert out.sample.shape == (2, 3, *size)
        assert unet(torch.randn(2, 6, *size), 5, return_dict=False)[0].shape == (2, 3, *size)


def test_unet_uses_es_layers_binary_except_full_precision_levels():
    unet = tiny_unet(expand_ratio=2, es_groups=2, block_out_channels=(8, 16, 32), full_precision_levels=[0])
    level0 = [m for m in unet.encoder[0].modules() if isinstance(m, (BinaryConvUnit, FullPrecisionConvUnit))]
    deeper = [m for m in unet.encoder[1].modules() if isinstance(m, (BinaryConvUnit, FullPrecisionConvUnit))]
    assert level0 and all(isinstance(m, FullPrecisionConvUnit) for m in level0)
    assert deeper and all(isinstance(m, BinaryConvUnit) for m in deeper)
    convs = [m for m in unet.modules() if isinstance(m, ESBinaryConv2d)]
    assert convs and all(c.expand_ratio == 2 and c.es_groups == 2 and c.is_binary for c in convs)
    # the resampling conv between the FP and the binary level stays full precision, the deeper one is binary
    assert isinstance(unet.downsamplers[0].conv, FullPrecisionConvUnit)
    assert isinstance(unet.downsamplers[1].conv, BinaryConvUnit)


def test_gradients_reach_every_parameter():
    unet = tiny_unet(expand_ratio=2)
    unet(torch.randn(2, 6, 8, 8), torch.tensor([10, 90])).sample.square().mean().backward()
    assert [n for n, p in unet.named_parameters() if p.grad is None] == []
    # buckets 0 (t=10) and 4 (t=90) of 5 were used: only their bank rows learn
    for bank in (unet.encoder[1][0].conv1.redistribute.bias, unet.encoder[1][0].conv1.activation.slope):
        used = bank.grad.abs().sum(1) > 0
        assert used.tolist() == [True, False, False, False, True]


def test_resampling_shortcut_keeps_replicas_apart():
    from esbnn_plugins.diffusers.blocks import match_channels

    replica = torch.arange(4.0).view(1, 4, 1, 1)
    x = torch.cat([replica, replica + 10], dim=1)  # 2 replicas of 4 nominal channels
    assert match_channels(x, 2, replicas=2).flatten().tolist() == [0.5, 2.5, 10.5, 12.5]
    assert match_channels(x, 8, replicas=2).flatten().tolist() == [0, 0, 1, 1, 2, 2, 3, 3,
                                                                   10, 10, 11, 11, 12, 12, 13, 13]
    assert match_channels(x, 4, replicas=2) is x


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DDIMScheduler])
def test_timestep_buckets_from_raw_timesteps(scheduler_cls):
    unet = tiny_unet(num_timestep_buckets=5, num_train_timesteps=1000)
    scheduler = scheduler_cls(num_train_timesteps=1000)
    scheduler.set_timesteps(50 if scheduler_cls is DDIMScheduler else 1000)
    timesteps = scheduler.timesteps
    buckets = unet.timestep_buckets(timesteps)
    assert torch.equal(buckets, timesteps // 200)
    assert set(buckets.tolist()) == {0, 1, 2, 3, 4}
    assert unet.timestep_buckets(torch.tensor([0, 199, 200, 999, 1000, 5000])).tolist() == [0, 0, 1, 4, 4, 4]
    assert unet.timestep_buckets(torch.tensor([199.9, 200.0])).tolist() == [0, 1]  # float timesteps


def test_each_sample_uses_the_bank_of_its_own_bucket():
    unet = tiny_unet(num_timestep_buckets=2, num_train_timesteps=100).eval()
    unit = unet.encoder[1][0].conv1
    with torch.no_grad():
        unit.redistribute.bias[1].fill_(3.0)  # changes only what bucket 1 (t >= 50) computes
    x = torch.randn(1, 6, 8, 8)
    batch = unet(torch.cat([x, x]), torch.tensor([10, 60])).sample
    assert torch.allclose(batch[0], unet(x, 10).sample[0], atol=1e-5)
    assert torch.allclose(batch[1], unet(x, 60).sample[0], atol=1e-5)
    fresh = tiny_unet(num_timestep_buckets=2, num_train_timesteps=100).eval()
    fresh.load_state_dict(unet.state_dict())
    with torch.no_grad():
        fresh.encoder[1][0].conv1.redistribute.bias[1].zero_()
    assert torch.equal(fresh(x, 10).sample, unet(x, 10).sample)
    assert not torch.allclose(fresh(x, 60).sample, unet(x, 60).sample)


def perturb(module: torch.nn.Module) -> torch.nn.Module:
    """Bank rows, slopes and biases that differ from bucket to bucket and from replica to replica."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() <= 2:
                p.add_(torch.randn_like(p) * 0.3)
    return module


def unit_modules_path(unit, x, bucket, skip, shift):
    """What a conv unit computes, written with its modules (the unfused path)."""
    if isinstance(unit, FullPrecisionConvUnit):
        y = unit.conv(torch.nn.functional.silu(x))
    else:
        y = unit.activation(unit.conv(unit.redistribute(x, bucket)), bucket)
        y = y + x if unit.shortcut else y
    return y + skip + shift[:, :, None, None]


@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("cls,in_ch,out_ch", [(BinaryConvUnit, 8, 8), (BinaryConvUnit, 8, 16),
                                              (FullPrecisionConvUnit, 8, 8)])
def test_conv_unit_fused_path_matches_the_modules(cls, in_ch, out_ch, tau, g):
    from esbnn_plugins.diffusers.blocks import Stream

    torch.manual_seed(0)
    unit = perturb(cls(in_ch, out_ch, 3, Stream(tau, g, "approx_sign", "scaled_sign", 3)))
    bucket = torch.tensor([0, 2, 1])
    x = torch.randn(3, in_ch * tau * g, 5, 5)
    skip, shift = torch.randn(3, out_ch * tau * g, 5, 5), torch.randn(3, out_ch * tau * g)
    path = type(unit(x, bucket, skip=skip, shift=shift).grad_fn).__name__
    fused_op = "GeneratedBackwardFor_esbnn_plugins_replicated_affine_act_defaultBackward"  # the fused operator
    assert path == ("AddBackward0" if tau == g == 1 else fused_op)
    run = forward_backward(lambda *t: unit(t[0], bucket, skip=t[1], shift=t[2]), unit, x, skip, shift)
    ref = forward_backward(lambda *t: unit_modules_path(unit, t[0], bucket, t[1], t[2]), unit, x, skip, shift)
    assert_same_run(run, ref, exact=tau == g == 1)  # tau = g = 1: the modules as written, bit-exact baseline


@pytest.mark.parametrize("binary", [True, False])
def test_tau1_g1_residual_block_and_downsample_are_bit_exact_as_written(binary):
    from esbnn_plugins.diffusers.blocks import Downsample, ResidualBlock, Stream

    stream = Stream(1, 1, "approx_sign", "scaled_sign", 3)
    block, down = perturb(ResidualBlock(8, 16, 2, stream, binary)), perturb(Downsample(8, 16, stream, binary))
    x, temb, bucket = torch.randn(3, 8, 6, 6), torch.randn(3, 16), torch.tensor([0, 2, 1])
    h = block.conv1(block.norm1(x), bucket) + block.time_proj(torch.nn.functional.silu(temb))[:, :, None, None]
    assert torch.equal(block(x, temb, bucket), x + block.conv2(block.norm2(h), bucket))
    shortcut = torch.nn.functional.avg_pool2d(x, 2).repeat_interleave(2, dim=1)
    assert torch.equal(down(x, bucket), down.conv(torch.nn.functional.pixel_unshuffle(x, 2), bucket) + shortcut)


@pytest.mark.parametrize("tau,g", [(2, 1), (2, 2)])
def test_unet_fused_path_matches_the_modules(tau, g):
    torch.manual_seed(0)
    unet = perturb(tiny_unet(block_out_channels=(8, 16, 16), expand_ratio=tau, es_groups=g))
    modules = copy.deepcopy(unet)
    for m in modules.modules():
        if isinstance(m, ESConv2d):
            m.register_forward_hook(lambda *args: None)  # a hook on the conv: the units run their modules
    x, t = torch.randn(3, 6, 12, 12), torch.tensor([5, 50, 95])
    assert_same_run(forward_backward(lambda s: unet(s, t).sample, unet, x),
                    forward_backward(lambda s: modules(s, t).sample, modules, x))


def test_complexity_ops_ratio_es_over_baseline():
    inputs = (torch.randn(1, 6, 32, 32), torch.tensor([7]))
    base = complexity(tiny_unet(block_out_channels=(8, 16, 32)), inputs)
    assert base.bops > 0 and base.flops > 0
    for tau, g in [(2, 1), (2, 2)]:
        report = complexity(tiny_unet(block_out_channels=(8, 16, 32), expand_ratio=tau, es_groups=g), inputs)
        assert report.bops == base.bops
        assert report.ops / base.ops <= 1.02
        assert report.binary_params == base.binary_params


def test_unet_save_load_round_trip_bit_exact(tmp_path):
    unet = tiny_unet(expand_ratio=2, es_groups=2, full_precision_levels=[], reduce_mode="mean",
                     act_binarizer="rsign", weight_binarizer=dict(type="hard_sign", temperature=0.5))
    unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = ESBinarySRUNet.from_pretrained(tmp_path)
    assert public_config(loaded) == public_config(unet)
    assert not loaded.training
    x = torch.randn(2, 6, 7, 9)
    assert torch.equal(loaded(x, torch.tensor([3, 77])).sample, unet.eval()(x, torch.tensor([3, 77])).sample)


@pytest.mark.parametrize("kwargs,message", [
    (dict(block_out_channels=(16, 8), expand_ratio=16), r"block_out_channels\[1\]=8 is not divisible by "
                                                        r"expand_ratio\*es_groups=16\*1=16"),
    (dict(block_out_channels=(6, 12), expand_ratio=2, es_groups=2, norm_num_groups=1),
     r"block_out_channels\[0\]=6 is not divisible by expand_ratio\*es_groups=2\*2=4"),
    (dict(block_out_channels=(8, 12)), r"block_out_channels\[0\]=8 and block_out_channels\[1\]=12: one must divide"),
    (dict(layers_per_block=[1]), "layers_per_block has 1 entries"),
    (dict(full_precision_levels=[2]), r"full_precision_levels entries must be level indices in \[0, 2\)"),
    (dict(act_binarizer="nope"), "unknown activation binarizer 'nope'"),
    (dict(expand_ratio=0), "expand_ratio must be an integer >= 1, got 0"),
])
def test_unet_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_unet(**kwargs)


def test_unet_input_errors():
    unet = tiny_unet()
    with pytest.raises(ValueError, match=r"expected sample of shape \(N, 6, H, W\)"):
        unet(torch.randn(1, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="1-D tensor of 2 entries"):
        unet(torch.randn(2, 6, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="timesteps must be >= 0"):
        unet(torch.randn(1, 6, 8, 8), -1)


# ------------------------------------------------------------------------------------------- pipeline
def test_pipeline_inputs_pil_numpy_tensor_single_and_batched():
    pipe = tiny_pipe(upscale_factor=2)
    rng = np.random.default_rng(0)
    arrays = rng.random((2, 5, 7, 3)).astype(np.float32)
    uint8 = (arrays * 255).round().astype(np.uint8)
    reference = run(pipe, uint8[0])
    assert reference.shape == (1, 10, 14, 3) and reference.dtype == np.float32
    assert 0 <= reference.min() and reference.max() <= 1
    same = [PIL.Image.fromarray(uint8[0]), torch.from_numpy(uint8[0]).permute(2, 0, 1),
            uint8[0].astype(np.float32) / 255, torch.from_numpy(uint8[0]).permute(2, 0, 1).float() / 255]
    for image in same:
        assert np.array_equal(run(pipe, image), reference)
    batch = run(pipe, uint8, output_type="pt")
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 3, 10, 14)
    pil_batch = run(pipe, [PIL.Image.fromarray(a) for a in uint8], output_type="pil")
    assert len(pil_batch) == 2 and pil_batch[0].size == (14, 10)
    assert np.array_equal(np.asarray(pil_batch[1]), (batch[1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    out = pipe(arrays[0], num_inference_steps=2)
    assert isinstance(out, ImagePipelineOutput) and isinstance(out.images[0], PIL.Image.Image)


def test_pipeline_deterministic_under_generator_and_x4_odd_size():
    pipe = tiny_pipe(upscale_factor=4, expand_ratio=2)
    image = np.random.default_rng(1).random((3, 5, 3))
    first, second, other = run(pipe, image, seed=3), run(pipe, image, seed=3), run(pipe, image, seed=4)
    assert first.shape == (1, 12, 20, 3)
    assert np.array_equal(first, second) and not np.array_equal(first, other)


def test_pipeline_schedulers_are_swappable():
    pipe = tiny_pipe()
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.clip_sample is False
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    out = run(pipe, np.full((4, 4, 3), 0.5), steps=2)
    assert out.shape == (1, 8, 8, 3) and np.isfinite(out).all()


def test_pipeline_save_load_bit_identical(tmp_path):
    pipe = tiny_pipe(upscale_factor=3, expand_ratio=2, es_groups=2)
    image = np.random.default_rng(2).random((6, 5, 3)).astype(np.float32)
    reference = run(pipe, image, seed=7)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.rglob("*.bin"))
    for loader in (DiffusionPipeline, ESBinarySRPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is ESBinarySRPipeline and loaded.config.upscale_factor == 3
        loaded.set_progress_bar_config(disable=True)
        assert np.array_equal(run(loaded, image, seed=7), reference)


def test_namespace_patch_is_one_idempotent_attribute():
    assert diffusers.ESBinarySRPipeline is ESBinarySRPipeline
    es_diffusers.expose_pipeline_to_diffusers()
    assert diffusers.ESBinarySRPipeline is ESBinarySRPipeline


@pytest.mark.parametrize("image,error,message", [
    (np.zeros((4, 4, 4), np.float32), ValueError, r"image\[0\]: expected 3 colour channels \(H, W, 3\), got 4"),
    (torch.zeros(1, 4, 4), ValueError, r"expected 3 colour channels \(3, H, W\), got 1"),
    (PIL.Image.new("L", (4, 4)), ValueError, "mode 'L'"),
    (np.zeros((4, 4, 3), np.int64), TypeError, "got dtype torch.int64"),
    (np.full((4, 4, 3), 2.0), ValueError, r"must be in \[0, 1\], got min 2, max 2"),
    (torch.full((3, 4, 4), -1.0), ValueError, r"images in \[-1, 1\]\?"),
    (np.zeros((0, 4, 3), np.float32), ValueError, "zero size"),
    ([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], ValueError, "same size"),
    ([], ValueError, "empty batch"),
    ("lr.png", TypeError, "expected a PIL image, numpy array or torch tensor, got str"),
])
def test_pipeline_bad_input_errors(image, error, message):
    with pytest.raises(error, match=message):
        run(tiny_pipe(), image, steps=1)


def test_pipeline_bad_settings():
    with pytest.raises(ValueError, match=r"upscale_factor must be one of \(2, 3, 4\), got 8"):
        ESBinarySRPipeline(tiny_unet(), upscale_factor=8)
    with pytest.raises(ValueError, match="in_channels = 2 \\* out_channels"):
        ESBinarySRPipeline(tiny_unet(in_channels=3))
    with pytest.raises(ValueError, match="num_train_timesteps=1000 but the UNet's timestep buckets were made for 100"):
        ESBinarySRPipeline(tiny_unet(), DDIMScheduler(num_train_timesteps=1000))
    with pytest.raises(ValueError, match="residual_scale must be a number > 0, got 0"):
        ESBinarySRPipeline(tiny_unet(), residual_scale=0)
    with pytest.raises(ValueError, match="output_type must be"):
        run(tiny_pipe(), np.zeros((4, 4, 3)), output_type="latent")


class OracleUNet(ESBinarySRUNet):
    """Predicts the exact noise of a known clean sample: the pipeline must then return the HR image."""

    def forward(self, sample, timestep, return_dict=True):
        alpha_bar = self.alphas_cumprod[int(timestep)]
        noise = (sample[:, :3] - alpha_bar.sqrt() * self.clean) / (1 - alpha_bar).sqrt()
        return UNet2DOutput(sample=noise)


@pytest.mark.parametrize("residual", [True, False])
def test_pipeline_inverts_the_training_target(residual):
    """Training target (diffusion_target), conditioning and DDIM sampling agree: a perfect noise predictor
    reproduces the HR image."""
    from esbnn_plugins.diffusers.pipeline import diffusion_target, upsample_condition

    hr = torch.rand(1, 3, 12, 16)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    unet = OracleUNet(**TINY)
    pipe = ESBinarySRPipeline(unet, upscale_factor=2, residual=residual, residual_scale=0.1)
    pipe.set_progress_bar_config(disable=True)
    unet.alphas_cumprod = pipe.scheduler.alphas_cumprod
    unet.clean = diffusion_target(hr, upsample_condition(lr, 2), residual, 0.1)
    out = run(pipe, lr, steps=10, output_type="pt")
    assert torch.allclose(out, hr, atol=1e-4)
