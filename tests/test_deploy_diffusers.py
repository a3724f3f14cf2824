"""Deployment of the ES binary SR UNet (issue 11): packed convs compute what the training convs compute, the
timestep-aware biases and RPReLUs stay per bucket, and ESBinarySRPipeline runs the exported and the loaded UNet."""
import pytest
import torch

from deploy_checks import binary_layers, check_packed_layers, sign_flips
from esbnn_plugins import deploy
from esbnn_plugins.diffusers import ESBinarySRPipeline, ESBinarySRUNet, export_unet, load_unet, save_unet
from esbnn_plugins.diffusers.blocks import TimestepBias, TimestepRPReLU

pytestmark = pytest.mark.usefixtures("one_thread")

TIMESTEPS = torch.tensor([5, 95])  # two buckets of five: each sample uses its own bank


def trained_unet(**kwargs) -> ESBinarySRUNet:
    """A small UNet with non-trivial timestep banks and GroupNorm affines (fresh ones are zeros and identities)."""
    torch.manual_seed(0)
    unet = ESBinarySRUNet(**{**dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=2,
                                    num_train_timesteps=100), **kwargs})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, (TimestepBias, TimestepRPReLU, torch.nn.GroupNorm)):
                for param in module.parameters():
                    param.add_(torch.rand(param.shape, generator=gen) * 0.4 - 0.2)
    return unet.eval()


@pytest.mark.parametrize("tau,g,levels", [(1, 1, ()), (2, 1, ()), (2, 2, ()), (2, 1, (0,))])
def test_exported_unet_matches_the_training_unet_per_layer_and_end_to_end(tau, g, levels):
    unet = trained_unet(expand_ratio=tau, es_groups=g, full_precision_levels=levels, act_binarizer="rsign" if g > 1
                        else "approx_sign")
    exported = export_unet(unet)
    assert isinstance(exported, ESBinarySRUNet) and not binary_layers(exported)
    assert sum(isinstance(m, (TimestepBias, TimestepRPReLU)) for m in exported.modules()) == \
        sum(isinstance(m, (TimestepBias, TimestepRPReLU)) for m in unet.modules())  # kept per bucket
    sample = torch.randn(2, 6, 12, 10, generator=torch.Generator().manual_seed(2))

    def run(m):
        return m(sample, TIMESTEPS).sample

    assert check_packed_layers(unet, exported, run) == 0  # no BN to fold: the conv alone is packed
    assert not any(sign_flips(unet, exported, run).values())  # precondition of the end-to-end comparison
    with torch.no_grad():
        want, have = run(unet), run(exported)
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("float16_weights", [False, True])
def test_saved_unet_loads_and_runs_in_the_pipeline(tmp_path, float16_weights):
    unet = trained_unet(expand_ratio=2, es_groups=2)
    exported = export_unet(unet, float16_weights=float16_weights)
    path = tmp_path / "unet.safetensors"
    save_unet(exported, path, extra={"upscale_factor": 2})
    header = deploy.read_header(path)
    assert header["framework"]["name"] == "diffusers" and header["float16_weights"] == float16_weights
    loaded = load_unet(path)
    public = [{k: list(v) if isinstance(v, tuple) else v for k, v in m.config.items() if not k.startswith("_")}
              for m in (loaded, unet)]
    assert public[0] == public[1] and not loaded.training
    image = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(3))
    outputs = []
    for model in (unet, exported, loaded):
        pipe = ESBinarySRPipeline(model, upscale_factor=header["extra"]["upscale_factor"])
        pipe.set_progress_bar_config(disable=True)
        outputs.append(pipe(image, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                            output_type="pt").images)
    assert outputs[0].shape == outputs[2].shape == (1, 3, 12, 10)
    assert torch.equal(outputs[2], outputs[1])  # the file restores the exported UNet bit for bit
    if not float16_weights:  # images in [0, 1]: the packed UNet's samples agree to float rounding
        torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-5)


def test_unet_files_of_another_kind_are_clear_errors(tmp_path):
    from esbnn_plugins.models import ESBinaryResNet

    deploy.save(deploy.export(ESBinaryResNet(20, num_classes=10)), tmp_path / "classifier.safetensors")
    with pytest.raises(ValueError, match="holds a self-contained model \\(ESBinaryResNet\\), not an ESBinarySRUNet"):
        load_unet(tmp_path / "classifier.safetensors")
    with pytest.raises(TypeError, match="expected an ESBinarySRUNet, got ESBinaryResNet"):
        export_unet(ESBinaryResNet(20))
    exported = export_unet(trained_unet(expand_ratio=2))
    conv = exported.encoder[1][0].conv1.conv
    with pytest.raises(ValueError, match=r"'encoder\.1\.0\.conv1\.conv': expected 32 input channels"):
        conv(torch.randn(1, 16, 4, 4))
