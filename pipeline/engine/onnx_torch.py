"""A small ONNX -> torch.nn.Module converter for plain feed-forward CNNs such as SFace.

onnx2torch is not used: it imports torchvision, which breaks beside CPU torch builds, and SFace needs only a
handful of operators. The converted module runs the ONNX graph node by node in topological (file) order; every
initializer becomes a buffer, so `.to("cuda")` / `.half()` work as usual, and the batch dimension is free
(the ONNX file's fixed batch of 1 is ignored).

Supported ops: Add, BatchNormalization, Conv, Dropout, Flatten, Gemm, Identity, Mul, PRelu, Relu, Sub.
An unsupported op fails at conversion time, naming the op, never at run time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

try:  # torch and onnx are the optional `torch` extra
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None  # type: ignore[assignment]
    nn = None  # type: ignore[assignment]


class ConversionError(RuntimeError):
    pass


SUPPORTED_OPS = frozenset({"Add", "BatchNormalization", "Conv", "Dropout", "Flatten", "Gemm", "Identity", "Mul",
                           "PRelu", "Relu", "Sub"})


def _require() -> None:
    if torch is None:
        raise ConversionError("the torch path needs the `torch` extra: pip install -e '.[torch]'")


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b, a):
    pads = list(a.get("pads", [0, 0, 0, 0]))
    strides = tuple(a.get("strides", [1, 1]))
    dil = tuple(a.get("dilations", [1, 1]))
    group = int(a.get("group", 1))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ConversionError("Conv auto_pad is not supported")
    if len(pads) == 4 and pads[0] == pads[2] and pads[1] == pads[3]:
        return F.conv2d(x, w, b, strides, (pads[0], pads[1]), dil, group)
    # asymmetric ONNX pads [top, left, bottom, right] -> F.pad (left, right, top, bottom)
    x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    return F.conv2d(x, w, b, strides, 0, dil, group)


def _prelu(x, slope):
    if x.dim() >= 2 and slope.numel() == x.shape[1] and slope.dim() in (1, x.dim() - 1):
        return F.prelu(x, slope.reshape(-1))  # per-channel slope: the fast kernel
    return torch.where(x >= 0, x, x * slope)


def _fold_batchnorm(nodes: list, consts: dict) -> list:
    """Conv followed by a BatchNormalization that is its only consumer -> one Conv with adjusted weights
    (what inference engines do; it also makes the torch path much faster on CPU)."""
    uses: dict[str, int] = {}
    for n in nodes:
        for i in n[1]:
            uses[i] = uses.get(i, 0) + 1
    out, skip = [], set()
    by_input = {}
    for k, n in enumerate(nodes):
        if n[0] == "BatchNormalization":
            by_input.setdefault(n[1][0], k)
    for k, (op, ins, outs, a) in enumerate(nodes):
        if k in skip:
            continue
        bn_k = by_input.get(outs[0]) if op == "Conv" else None
        if bn_k is not None and uses.get(outs[0]) == 1 and all(n in consts for n in nodes[bn_k][1][1:5]) \
                and ins[1] in consts and (len(ins) < 3 or ins[2] in consts):
            _, bn_ins, bn_outs, bn_a = nodes[bn_k]
            g, beta, mean, var = (consts[n].astype(np.float64) for n in bn_ins[1:5])
            w = consts[ins[1]].astype(np.float64)
            b = consts[ins[2]].astype(np.float64) if len(ins) > 2 and ins[2] else np.zeros(w.shape[0])
            f = g / np.sqrt(var + float(bn_a.get("epsilon", 1e-5)))
            wn, bname = f"{ins[1]}__bnfold_w", f"{ins[1]}__bnfold_b"
            consts[wn] = (w * f.reshape(-1, 1, 1, 1)).astype(np.float32)
            consts[bname] = ((b - mean) * f + beta).astype(np.float32)
            out.append((op, [ins[0], wn, bname], bn_outs, a))
            skip.add(bn_k)
        else:
            out.append((op, ins, outs, a))
    return out


def _gemm(x, w, b, a):
    if a.get("transA", 0):
        x = x.t()
    w = w.t() if a.get("transB", 0) else w
    y = float(a.get("alpha", 1.0)) * (x @ w)
    if b is not None:
        y = y + float(a.get("beta", 1.0)) * b
    return y


def _batchnorm(x, scale, bias, mean, var, a):
    return F.batch_norm(x, mean, var, scale, bias, training=False, momentum=0.0, eps=float(a.get("epsilon", 1e-5)))


def _flatten(x, a):
    axis = int(a.get("axis", 1))
    if axis != 1:
        raise ConversionError("Flatten with axis != 1 is not supported")
    return torch.flatten(x, 1)


class OnnxModule(nn.Module if nn is not None else object):  # type: ignore[misc]
    """An ONNX graph as a torch module. forward(*inputs) takes the graph's non-constant inputs in order and returns
    the first graph output (or a tuple when there are several)."""

    def __init__(self, model, *, fold_batchnorm: bool = True):
        _require()
        super().__init__()
        from onnx import numpy_helper
        graph = model.graph
        consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:  # Constant nodes fold into buffers too
            if n.op_type == "Constant":
                consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in SUPPORTED_OPS | {"Constant"}})
        if unsupported:
            raise ConversionError(f"unsupported ONNX ops: {', '.join(unsupported)}")
        self.input_names = [i.name for i in graph.input if i.name not in consts]
        self.output_names = [o.name for o in graph.output]
        nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node if n.op_type != "Constant"]
        self.nodes = _fold_batchnorm(nodes, consts) if fold_batchnorm else nodes
        used = {i for n in self.nodes for i in n[1]}
        self._buf_of: dict[str, str] = {}
        for k, (name, arr) in enumerate((n, a) for n, a in consts.items() if n in used):
            buf = f"c{k}"
            self.register_buffer(buf, torch.from_numpy(np.array(arr, copy=True)), persistent=True)
            self._buf_of[name] = buf

    def _get(self, env: dict, name: str):
        if name == "":
            return None
        if name in env:
            return env[name]
        return getattr(self, self._buf_of[name])

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(inputs)}")
        env = dict(zip(self.input_names, inputs))
        for op, ins, outs, a in self.nodes:
            v = [self._get(env, n) for n in ins]
            if op == "Conv":
                y = _conv(v[0], v[1], v[2] if len(v) > 2 else None, a)
            elif op == "BatchNormalization":
                y = _batchnorm(*v[:5], a)
            elif op == "PRelu":
                y = _prelu(v[0], v[1])
            elif op == "Relu":
                y = F.relu(v[0])
            elif op in ("Dropout", "Identity"):
                y = v[0]
            elif op == "Flatten":
                y = _flatten(v[0], a)
            elif op == "Gemm":
                y = _gemm(v[0], v[1], v[2] if len(v) > 2 else None, a)
            elif op == "Add":
                y = v[0] + v[1]
            elif op == "Sub":
                y = v[0] - v[1]
            elif op == "Mul":
                y = v[0] * v[1]
            else:  # pragma: no cover - refused in __init__
                raise ConversionError(op)
            env[outs[0]] = y
        out = tuple(env[n] for n in self.output_names)
        return out[0] if len(out) == 1 else out


def convert(model_or_path, *, fold_batchnorm: bool = True) -> "OnnxModule":
    """ONNX file path or ModelProto -> an eval-mode OnnxModule (on CPU; move it with .to(device))."""
    _require()
    import onnx
    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    return OnnxModule(model, fold_batchnorm=fold_batchnorm).eval()
