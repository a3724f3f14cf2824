"""ES-BNN for Diffusers: the binary SR diffusion UNet and its pipeline (METHOD.md section 5).

Importing this package makes ``DiffusionPipeline.from_pretrained(dir)`` find :class:`ESBinarySRPipeline`:
Diffusers resolves a saved pipeline's ``_class_name`` as an attribute of the ``diffusers`` module and has
no registry for outside pipelines, so :func:`expose_pipeline_to_diffusers` sets that one attribute (the
project's only change to Diffusers' namespace). The UNet is found through ``model_index.json``'s module
path, ``esbnn_plugins.diffusers.unet``, which this import loads. ``export_unet`` / ``save_unet`` /
``load_unet`` deploy the UNet with packed 1-bit convs (:mod:`.deploy`).
"""
import diffusers

from .deploy import export_unet, load_unet, save_unet
from .pipeline import SUPPORTED_SCALES, ESBinarySRPipeline, sr3_scheduler
from .unet import ESBinarySRUNet


def expose_pipeline_to_diffusers() -> None:
    """Make ``diffusers.ESBinarySRPipeline`` name this package's pipeline (idempotent)."""
    current = getattr(diffusers, ESBinarySRPipeline.__name__, None)
    if current is not None and current is not ESBinarySRPipeline:
        raise RuntimeError(f"diffusers already defines {ESBinarySRPipeline.__name__} ({current!r}); "
                           "refusing to replace it")
    setattr(diffusers, ESBinarySRPipeline.__name__, ESBinarySRPipeline)


expose_pipeline_to_diffusers()

__all__ = ["ESBinarySRUNet", "ESBinarySRPipeline", "SUPPORTED_SCALES", "sr3_scheduler",
           "expose_pipeline_to_diffusers", "export_unet", "load_unet", "save_unet"]
