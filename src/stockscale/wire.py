"""Nested tensors and JSON values as one uint8 tensor and back: what the ranks of a run send each other.

`torch.distributed.broadcast_object_list` pickles, and unpickling what arrives can run code; this codec
cannot. It carries what a model's and an optimizer's state_dict, an RNG state and the training counters are
made of: tensors, JSON scalars (None, bool, int, float, str), and dicts (str or int keys), lists and tuples
of those. Anything else is a TypeError when packing, not a silent conversion.

The packed form: the header's length (8 bytes, little-endian), the header (JSON: the structure, with each
tensor's index, dtype and shape in its place) and then every tensor's bytes, one after the other. Unpacked
tensors are on the CPU, contiguous, and own their memory.
"""

from __future__ import annotations

import json
from typing import Any

import torch

_LENGTH_BYTES = 8


def pack(value: Any) -> torch.Tensor:
    """`value` as one 1-d uint8 CPU tensor (see the module docstring for what it may hold)."""
    tensors: list[torch.Tensor] = []
    header = json.dumps(_encode(value, tensors), separators=(",", ":")).encode()
    parts = [torch.tensor(list(len(header).to_bytes(_LENGTH_BYTES, "little")), dtype=torch.uint8),
             torch.frombuffer(bytearray(header), dtype=torch.uint8)]
    parts += [t.reshape(-1).view(torch.uint8) for t in tensors]
    return torch.cat(parts)


def unpack(blob: torch.Tensor) -> Any:
    """The value `pack` was given, from its packed form; ValueError when `blob` is not one."""
    if blob.dtype != torch.uint8 or blob.dim() != 1 or blob.numel() < _LENGTH_BYTES:
        raise ValueError("not a packed value: expected a 1-d uint8 tensor")
    raw = blob.cpu().numpy().tobytes()
    length = int.from_bytes(raw[:_LENGTH_BYTES], "little")
    if _LENGTH_BYTES + length > len(raw):
        raise ValueError("not a packed value: its header is cut short")
    payload = memoryview(raw)[_LENGTH_BYTES + length:]
    tree = json.loads(raw[_LENGTH_BYTES:_LENGTH_BYTES + length])
    offset = 0
    tensors: dict[int, torch.Tensor] = {}
    for index, dtype, shape in _tensor_specs(tree):
        size = _dtype(dtype).itemsize * _numel(shape)
        if offset + size > len(payload):
            raise ValueError("not a packed value: its tensors are cut short")
        chunk = torch.frombuffer(bytearray(payload[offset:offset + size]), dtype=torch.uint8) if size else \
            torch.empty(0, dtype=torch.uint8)
        tensors[index] = chunk.view(_dtype(dtype)).reshape(shape)
        offset += size
    if offset != len(payload):
        raise ValueError("not a packed value: bytes left over after its tensors")
    return _decode(tree, tensors)


def _encode(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value.detach().cpu().contiguous())
        return {"t": [len(tensors) - 1, str(value.dtype).removeprefix("torch."), list(value.shape)]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise TypeError(f"cannot pack a dict key of type {type(key).__name__}")
        return {"d": [[key, _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, list):
        return {"l": [_encode(item, tensors) for item in value]}
    if isinstance(value, tuple):
        return {"u": [_encode(item, tensors) for item in value]}
    raise TypeError(f"cannot pack a value of type {type(value).__name__}")


def _decode(tree: Any, tensors: dict[int, torch.Tensor]) -> Any:
    if not isinstance(tree, dict):
        return tree
    ((kind, body),) = tree.items()
    if kind == "t":
        return tensors[body[0]]
    if kind == "d":
        return {key: _decode(item, tensors) for key, item in body}
    items = [_decode(item, tensors) for item in body]
    return items if kind == "l" else tuple(items)


def _tensor_specs(tree: Any) -> list[tuple[int, str, list[int]]]:
    """Every tensor's (index, dtype, shape) in the header, in index order (the order of their bytes)."""
    found: list[tuple[int, str, list[int]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ((kind, body),) = node.items()
            if kind == "t":
                found.append((int(body[0]), str(body[1]), [int(n) for n in body[2]]))
            elif kind == "d":
                for _, item in body:
                    visit(item)
            else:
                for item in body:
                    visit(item)

    visit(tree)
    found.sort()
    if [index for index, _, _ in found] != list(range(len(found))):
        raise ValueError("not a packed value: its tensors are not numbered 0..n-1")
    return found


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a packed value: {name!r} is not a torch dtype")
    return dtype


def _numel(shape: list[int]) -> int:
    count = 1
    for n in shape:
        if n < 0:
            raise ValueError("not a packed value: a negative tensor dimension")
        count *= n
    return count
