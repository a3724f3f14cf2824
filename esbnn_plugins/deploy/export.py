"""Export a trained ES network for deployment, save it as safetensors, load it back (issue 11).

:func:`export` copies the model in eval mode and replaces every ES binary conv/linear by a packed layer
(:mod:`.layers`), folding the batch norm that directly follows it inside the known blocks (ESBinaryUnit,
ReActBlock, BNextPart, and what adapters add with :func:`register_fold`) into the packed layer's
per-channel affine. Everything else (stem, FP ES convs, RPReLU, pooling, head) stays as it is; with
``float16_weights`` its conv kernels and linear matrices are rounded to float16 (stored in 16 bits,
computed in float32).

Two file kinds, both safetensors (no pickle) with one JSON metadata entry:

* self-contained (:func:`save` / :func:`load`): the module tree is described (each module's class, from a
  fixed list of known classes, and its plain attributes); :func:`load` rebuilds it without running
  constructors and without framework code.
* framework state (:func:`save_state` / :func:`restore`): a model exported in place (``standalone=False``:
  an MMDetection detector, a Diffusers UNet) is stored as its state dict plus the description its adapter
  rebuilds the framework model from (the config); :func:`restore` converts the rebuilt model's binary layers
  to packed ones (shapes only) and loads the file's tensors into it.

Unknown classes, missing or extra tensors, foreign or truncated files are errors naming the file and the
problem.
"""
from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import __version__
from ..models.bnext import BNextBlock, BNextPart, ESBNext
from ..models.reactnet import ESReActNet, ReActBlock
from ..models.resnet import ESBinaryResNet, ESBinaryUnit
from ..ops import ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESLinear, LearnableBias, RPReLU
from ..ops.stream import ESExpand, ESReduce
from .layers import PackedBinaryConv2d, PackedBinaryLinear, foldable_norm

FORMAT = "esbnn_plugins.deploy"
FORMAT_VERSION = 1
_META_KEY = "esbnn_deploy"
FLOAT16_ATTR = "deploy_float16_weights"
"""Attribute set on the root of a model exported with ``float16_weights=True`` (saved as float16)."""
FLOAT16_MAX = 65504.0

_TORCH_CLASSES = (nn.Sequential, nn.ModuleList, nn.Identity, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d,
                  nn.LayerNorm, nn.GroupNorm, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.PReLU,
                  nn.ReLU, nn.Hardtanh, nn.Sigmoid, nn.Dropout)
_OWN_CLASSES = (ESConv2d, ESLinear, LearnableBias, RPReLU, ESExpand, ESReduce, ESBinaryResNet, ESBinaryUnit,
                ESReActNet, ReActBlock, ESBNext, BNextBlock, BNextPart, PackedBinaryConv2d, PackedBinaryLinear)
KNOWN_CLASSES: Dict[str, type] = {**{f"torch.nn.{c.__name__}": c for c in _TORCH_CLASSES},
                                  **{f"esbnn_plugins.{c.__name__}": c for c in _OWN_CLASSES}}
"""Every class a self-contained exported model may contain, by the name the file stores."""
_CLASS_NAMES = {cls: name for name, cls in KNOWN_CLASSES.items()}
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)

FoldPairs = Callable[[nn.Module], List[Tuple[str, str]]]
_FOLD_PAIRS: Dict[type, FoldPairs] = {
    ESBinaryUnit: lambda m: [("conv", "bn")],
    ReActBlock: lambda m: [("conv3x3", "bn1")] + [(f"pointwise.{i}", f"bn2.{i}") for i in range(len(m.pointwise))],
    BNextPart: lambda m: [("conv", "bn1")],
}
"""Per block class: (binary conv/linear, the norm applied directly and only to its output), relative paths."""


def register_fold(cls: type, pairs: FoldPairs) -> None:
    """Declare, for blocks of exactly class ``cls``, which norm directly and solely follows which binary layer
    (``pairs(block) -> [(layer path, norm path)]``), so :func:`export` folds it (adapters' blocks)."""
    _FOLD_PAIRS[cls] = pairs


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _packed(layer: nn.Module, bn: Optional[nn.Module], path: str, values: bool) -> Optional[nn.Module]:
    if isinstance(layer, ESBinaryConv2d):
        return PackedBinaryConv2d(layer, bn, path, values)
    if isinstance(layer, ESBinaryLinear):
        return PackedBinaryLinear(layer, bn, path, values)
    return None


def _pack(model: nn.Module, values: bool) -> nn.Module:
    """Replace (in place) every binary layer of ``model`` by a packed one, folding the declared norms; the
    new root (``model`` itself unless it is one binary layer). ``values=False``: shapes only."""
    for path, module in list(model.named_modules()):
        for layer_name, bn_name in _FOLD_PAIRS.get(type(module), lambda m: [])(module):
            layer, bn = module.get_submodule(layer_name), module.get_submodule(bn_name)
            if isinstance(layer, (ESBinaryConv2d, ESBinaryLinear)) and foldable_norm(bn, layer.out_width):
                _replace(module, layer_name, _packed(layer, bn, _join(path, layer_name), values))
                _replace(module, bn_name, nn.Identity())
    for path, module in list(model.named_modules()):
        packed = _packed(module, None, path, values)
        if packed is not None and path:
            _replace(model, path, packed)
        elif packed is not None:  # the model is one binary layer
            model = packed
    for path, module in model.named_modules():
        if getattr(module, "binarizes", False):  # a binarizer left behind: its layer is not an ES binary layer
            owner = path.rpartition(".")[0]
            layer = model.get_submodule(owner)
            raise ValueError(f"export: {owner or '<root>'} is a {type(layer).__module__}.{type(layer).__qualname__} "
                             f"with a binarizer ({path}), which the deploy exporter cannot pack; only "
                             f"esbnn_plugins.ops.ESBinaryConv2d and ESBinaryLinear (and subclasses) are packed")
    return model


def float16_tensors(model: nn.Module) -> Iterator[Tuple[str, Tensor]]:
    """``(state-dict key, tensor)`` of what ``float16_weights=True`` stores in float16: every float32 parameter
    named ``weight`` with at least 2 dimensions (conv kernels, linear matrices); biases, norms, shifts,
    activations and the packed layers' scales stay float32."""
    for path, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None and weight.dim() >= 2 and weight.dtype == torch.float32:
            yield _join(path, "weight"), weight


def export(model: nn.Module, *, float16_weights: bool = False, standalone: bool = True) -> nn.Module:
    """A deployable copy of ``model`` (eval mode, packed binary layers, folded BNs); ``model`` is unchanged.

    ``float16_weights``: round the full-precision conv kernels and linear matrices to float16 (stored in
    16 bits by :func:`save`/:func:`save_state`, computed in float32; see :func:`float16_tensors`).
    ``standalone`` (default): the result must consist of :data:`KNOWN_CLASSES` only, so :func:`save` can store
    it without framework code; ``False`` keeps framework modules (an adapter's in-place export, saved with
    :func:`save_state`). Raises ``ValueError`` naming the module path for a module the deploy format cannot
    hold (unknown class, a binary layer that is not binary yet, an activation binarizer without a sign forward,
    a weight beyond float16's range).
    """
    deployed = _pack(copy.deepcopy(model).eval(), values=True)
    if standalone:
        for path, module in deployed.named_modules():
            if type(module) not in _CLASS_NAMES:
                raise ValueError(f"export: {path or '<root>'} is a {type(module).__module__}."
                                 f"{type(module).__qualname__}, which the deploy exporter cannot handle; supported "
                                 f"modules: {', '.join(sorted(c.__name__ for c in _CLASS_NAMES))}")
    if float16_weights:
        with torch.no_grad():
            for key, weight in float16_tensors(deployed):
                largest = weight.abs().max().item() if weight.numel() else 0.0
                if not largest <= FLOAT16_MAX:
                    raise ValueError(f"export: {key} has |values| up to {largest:.6g}, beyond float16's largest "
                                     f"finite {FLOAT16_MAX:g}; export with float16_weights=False")
                weight.copy_(weight.half().float())
        setattr(deployed, FLOAT16_ATTR, True)
    return deployed.requires_grad_(False)


# ---------------------------------------------------------------------------------------------- file format

def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_encode(v, where) for v in value]
        return {"tuple": items} if isinstance(value, tuple) else items
    raise ValueError(f"save: {where} is a {type(value).__name__}, which the deploy format cannot store")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(_decode(v) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _describe(module: nn.Module, prefix: str, tensors: Dict[str, Tensor]) -> dict:
    attrs = {key: _encode(value, f"attribute {key!r} of {prefix or '<root>'}")
             for key, value in vars(module).items() if key not in _MODULE_INTERNALS}
    for group in ("_parameters", "_buffers"):
        for name, tensor in getattr(module, group).items():
            if tensor is not None:
                tensors[_join(prefix, name)] = tensor.detach().contiguous().clone()
    return {"class": _CLASS_NAMES[type(module)], "attrs": attrs,
            "params": {name: p is not None for name, p in module._parameters.items()},
            "buffers": {name: b is not None for name, b in module._buffers.items()},
            "non_persistent": sorted(module._non_persistent_buffers_set),
            "children": {name: None if child is None else _describe(child, _join(prefix, name), tensors)
                         for name, child in module._modules.items()}}


def _header(model: nn.Module, extra: Optional[dict]) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": type(model).__name__,
            "esbnn_plugins_version": __version__, "float16_weights": bool(getattr(model, FLOAT16_ATTR, False)),
            "extra": extra or {}}


def _write(model: nn.Module, tensors: Dict[str, Tensor], header: dict, path: Union[str, Path]) -> None:
    """Store ``tensors`` (the float16-rounded weights in 16 bits) and ``header`` as safetensors at ``path``."""
    from safetensors.torch import save_file

    if header["float16_weights"]:
        for key, _ in float16_tensors(model):
            tensors[key] = tensors[key].half()  # exact: export rounded these values to float16
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(header)})


def save(model: nn.Module, path: Union[str, Path], extra: Optional[dict] = None) -> None:
    """Write an :func:`export`-ed model to ``path`` (safetensors); ``extra``: JSON-serialisable notes
    (e.g. input normalisation) returned by :func:`read_header`."""
    for name, module in model.named_modules():
        if type(module) not in _CLASS_NAMES:
            raise ValueError(f"save: {name or '<root>'} is a {type(module).__name__}; save takes a model returned "
                             f"by esbnn_plugins.deploy.export (a framework model exported with standalone=False is "
                             f"saved by its adapter, with save_state)")
    tensors: Dict[str, Tensor] = {}
    header = {**_header(model, extra), "modules": _describe(model, "", tensors)}
    _write(model, tensors, header, path)


def save_state(model: nn.Module, path: Union[str, Path], framework: dict, extra: Optional[dict] = None) -> None:
    """Write a model exported with ``standalone=False`` as its state dict plus ``framework``: a JSON-serialisable
    description its adapter rebuilds the framework model from (``name``, ``loader`` (the function that loads
    such files, named in errors), and e.g. the config); see :func:`restore`."""
    if "name" not in framework or "loader" not in framework:
        raise ValueError(f"save_state: framework needs 'name' and 'loader' entries, got keys {sorted(framework)}")
    tensors = {key: tensor.detach().contiguous().clone() for key, tensor in model.state_dict().items()}
    _write(model, tensors, {**_header(model, extra), "framework": framework}, path)


def read_header(path: Union[str, Path]) -> dict:
    """The JSON header of a deploy file (architecture, versions, ``extra``, module tree or framework), checked."""
    return _parse(Path(path), Path(path).read_bytes())


def read_framework(path: Union[str, Path], name: str, reader: str, what: str) -> dict:
    """The header of a :func:`save_state` file of framework ``name`` (its ``framework`` entry checked); any
    other deploy file is an error of ``reader`` saying what the file holds and which loader reads it."""
    header = read_header(path)
    framework = header.get("framework") or {}
    if framework.get("name") != name:
        kind = f"a {framework.get('name')} model" if framework else "a self-contained model"
        raise ValueError(f"{reader}: {str(path)!r} holds {kind} ({header.get('architecture')}), not {what}; "
                         f"load it with {framework.get('loader', 'esbnn_plugins.deploy.load')}")
    return header


def _parse(path: Path, data: bytes) -> dict:
    """The deploy header of a safetensors file's bytes, every structural problem a ``ValueError``."""
    where = f"load: {str(path)!r}"
    if len(data) < 8:
        raise ValueError(f"{where} is not a deploy export: {len(data)} bytes, too short for a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError(f"{where} is truncated or not safetensors: header of {size} bytes announced, "
                         f"{len(data) - 8} present")
    try:
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{where} is not a safetensors file (bad header: {err})") from None
    if _META_KEY not in meta:
        raise ValueError(f"{where} is a safetensors file but not an ES-BNN deploy export (no {_META_KEY!r} "
                         f"metadata); export models with esbnn_plugins.deploy.export and save")
    header = json.loads(meta[_META_KEY])
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: format {header.get('format')!r} version {header.get('format_version')!r}; "
                         f"this esbnn_plugins ({__version__}) reads {FORMAT!r} version {FORMAT_VERSION}")
    return header


def _tensors(path: Path, data: bytes) -> Dict[str, Tensor]:
    """The file's tensors, float16 ones as float32 (deploy models compute in float32)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        tensors = load_bytes(data)
    except SafetensorError as err:
        raise ValueError(f"load: {str(path)!r} is truncated or corrupt: {err}") from None
    return {key: t.float() if t.dtype == torch.float16 else t for key, t in tensors.items()}


def _build(spec: dict, prefix: str, tensors: Dict[str, Tensor], used: List[str], where: str) -> nn.Module:
    name = spec.get("class")
    if name not in KNOWN_CLASSES:
        raise ValueError(f"{where}: module {prefix or '<root>'} has class {name!r}, not one the deploy format knows")
    cls = KNOWN_CLASSES[name]
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for key, value in spec["attrs"].items():
        module.__dict__[key] = _decode(value)

    def tensor(name: str) -> Tensor:
        key = _join(prefix, name)
        if key not in tensors:
            raise ValueError(f"{where}: tensor {key!r} is missing")
        used.append(key)
        return tensors[key].clone()  # fresh storage (DESIGN.md: offsets inside the file change BLAS rounding)

    for pname, present in spec["params"].items():
        module.register_parameter(pname, nn.Parameter(tensor(pname), requires_grad=False) if present else None)
    for bname, present in spec["buffers"].items():
        module.register_buffer(bname, tensor(bname) if present else None,
                               persistent=bname not in spec["non_persistent"])
    for cname, child in spec["children"].items():
        module.add_module(cname, None if child is None else _build(child, _join(prefix, cname), tensors, used, where))
    return module


def load(path: Union[str, Path]) -> nn.Module:
    """Rebuild a model written by :func:`save` (eval mode, no gradients)."""
    path = Path(path)
    where = f"load: {str(path)!r}"
    data = path.read_bytes()
    header = _parse(path, data)
    if "modules" not in header:
        framework = header.get("framework") or {}
        raise ValueError(f"{where} holds a {header.get('architecture')} saved with its {framework.get('name')} "
                         f"description, not a self-contained model; load it with {framework.get('loader')}")
    tensors = _tensors(path, data)
    used: List[str] = []
    try:
        model = _build(header["modules"], "", tensors, used, where)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: malformed module description ({type(err).__name__}: {err})") from None
    extra = sorted(set(tensors) - set(used))
    if extra:
        raise ValueError(f"{where}: tensors not used by the module description: {extra[:5]}")
    return model.eval()


def restore(model: nn.Module, path: Union[str, Path]) -> nn.Module:
    """Load a :func:`save_state` file into ``model``, the framework model its adapter rebuilt from the file's
    description (training form, any weights): its binary layers become packed layers (shapes only, converted in
    place) and take the file's tensors. Returns the model (eval mode, no gradients)."""
    path = Path(path)
    where = f"load: {str(path)!r}"
    data = path.read_bytes()
    header = _parse(path, data)
    if "framework" not in header:
        raise ValueError(f"{where} holds a self-contained {header.get('architecture')}; load it with "
                         f"esbnn_plugins.deploy.load")
    if type(model).__name__ != header["architecture"]:
        raise ValueError(f"{where} holds a {header['architecture']}, the model to restore into is a "
                         f"{type(model).__name__}")
    tensors = _tensors(path, data)
    model = _pack(model.eval(), values=False)
    own = model.state_dict()
    problems = [f"{title}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})" for title, keys in (
        ("missing in the file", sorted(set(own) - set(tensors))),
        ("not in the model", sorted(set(tensors) - set(own))),
        ("shape mismatches", [f"{key} {tuple(tensors[key].shape)} in the file vs {tuple(own[key].shape)}"
                              for key in own if key in tensors and tensors[key].shape != own[key].shape])) if keys]
    if problems:
        raise ValueError(f"{where} does not match the model rebuilt from its description ("
                         f"{'; '.join(problems)})")
    model.load_state_dict(tensors, strict=True)
    if header["float16_weights"]:
        setattr(model, FLOAT16_ATTR, True)
    return model.requires_grad_(False)


def packed_layers(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """``(path, layer)`` of every packed binary layer of an exported model."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear)))
