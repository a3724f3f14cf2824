"""Export a trained ES network for deployment, save it as safetensors, load it back (issue 11).

:func:`export` copies the model in eval mode and replaces every ES binary conv/linear by a packed layer
(:mod:`.layers`), folding the batch norm that directly follows it inside the known blocks (ESBinaryUnit,
ReActBlock, BNextPart) into the packed layer's per-channel affine. Everything else (stem, FP ES convs,
RPReLU, pooling, head) stays as it is.

:func:`save` writes a safetensors file (no pickle): the tensors, plus one JSON metadata entry describing the
module tree (each module's class, from a fixed list of known classes, and its plain attributes), the
architecture name and the format version. :func:`load` rebuilds the tree from that description without
running constructors, and accepts nothing else: unknown classes, missing or extra tensors, foreign or
truncated files are errors naming the file and the problem.
"""
from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

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

_TORCH_CLASSES = (nn.Sequential, nn.ModuleList, nn.Identity, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d,
                  nn.LayerNorm, nn.GroupNorm, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.PReLU,
                  nn.ReLU, nn.Hardtanh, nn.Sigmoid, nn.Dropout)
_OWN_CLASSES = (ESConv2d, ESLinear, LearnableBias, RPReLU, ESExpand, ESReduce, ESBinaryResNet, ESBinaryUnit,
                ESReActNet, ReActBlock, ESBNext, BNextBlock, BNextPart, PackedBinaryConv2d, PackedBinaryLinear)
KNOWN_CLASSES: Dict[str, type] = {**{f"torch.nn.{c.__name__}": c for c in _TORCH_CLASSES},
                                  **{f"esbnn_plugins.{c.__name__}": c for c in _OWN_CLASSES}}
"""Every class an exported model may contain, by the name the file stores."""
_CLASS_NAMES = {cls: name for name, cls in KNOWN_CLASSES.items()}
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)

_FOLD_PAIRS = {
    ESBinaryUnit: lambda m: [("conv", "bn")],
    ReActBlock: lambda m: [("conv3x3", "bn1")] + [(f"pointwise.{i}", f"bn2.{i}") for i in range(len(m.pointwise))],
    BNextPart: lambda m: [("conv", "bn1")],
}
"""Per block class: (binary conv, the norm applied directly and only to its output), relative paths."""


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def export(model: nn.Module) -> nn.Module:
    """A deployable copy of ``model`` (eval mode, packed binary layers, folded BNs); ``model`` is unchanged.

    Raises ``ValueError`` naming the module path for a module the deploy format cannot hold (unknown
    class, a binary layer that is not binary yet, an activation binarizer without a sign forward).
    """
    deployed = copy.deepcopy(model).eval()
    for path, module in list(deployed.named_modules()):
        for conv_name, bn_name in _FOLD_PAIRS.get(type(module), lambda m: [])(module):
            conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
            if isinstance(conv, ESBinaryConv2d) and foldable_norm(bn, conv.out_width):
                _replace(module, conv_name, PackedBinaryConv2d(conv, bn, _join(path, conv_name)))
                _replace(module, bn_name, nn.Identity())
    for path, module in list(deployed.named_modules()):
        packed = (PackedBinaryConv2d(module, None, path) if isinstance(module, ESBinaryConv2d) else
                  PackedBinaryLinear(module, path) if isinstance(module, ESBinaryLinear) else None)
        if packed is not None and path:
            _replace(deployed, path, packed)
        elif packed is not None:  # the model is one binary layer
            deployed = packed
    for path, module in deployed.named_modules():
        if type(module) not in _CLASS_NAMES:
            raise ValueError(f"export: {path or '<root>'} is a {type(module).__module__}.{type(module).__qualname__}, "
                             f"which the deploy exporter cannot handle; supported modules: "
                             f"{', '.join(sorted(c.__name__ for c in _CLASS_NAMES))}")
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


def save(model: nn.Module, path: Union[str, Path], extra: Optional[dict] = None) -> None:
    """Write an :func:`export`-ed model to ``path`` (safetensors); ``extra``: JSON-serialisable notes
    (e.g. input normalisation) returned by :func:`read_header`."""
    from safetensors.torch import save_file

    for name, module in model.named_modules():
        if type(module) not in _CLASS_NAMES:
            raise ValueError(f"save: {name or '<root>'} is a {type(module).__name__}; save takes a model returned "
                             f"by esbnn_plugins.deploy.export")
    tensors: Dict[str, Tensor] = {}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": type(model).__name__,
              "esbnn_plugins_version": __version__, "extra": extra or {},
              "modules": _describe(model, "", tensors)}
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(header)})


def read_header(path: Union[str, Path]) -> dict:
    """The JSON header of a deploy file (architecture, versions, ``extra``, module tree), checked."""
    return _parse(Path(path), Path(path).read_bytes())


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
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    path = Path(path)
    where = f"load: {str(path)!r}"
    data = path.read_bytes()
    header = _parse(path, data)
    try:
        tensors = load_bytes(data)
    except SafetensorError as err:
        raise ValueError(f"{where} is truncated or corrupt: {err}") from None
    used: List[str] = []
    try:
        model = _build(header["modules"], "", tensors, used, where)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: malformed module description ({type(err).__name__}: {err})") from None
    extra = sorted(set(tensors) - set(used))
    if extra:
        raise ValueError(f"{where}: tensors not used by the module description: {extra[:5]}")
    return model.eval()


def packed_layers(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """``(path, layer)`` of every packed binary layer of an exported model."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear)))
