"""A small TF.js graph-model runner in torch, for evaluating registry-shipped TF.js models on CPU (issue 15).

Evaluation only (bench/eval_human.py): no TF / TF.js runtime is needed, and the models stay in their npm
package (nothing is copied into the repo). A graph model is `model.json` (modelTopology.node: a frozen TF
GraphDef as JSON) plus weightsManifest shards; weights may be stored as float32, int32, float16
(`quantization.dtype` float16) or affine-quantised uint8 / uint16 (value = q * scale + min).

Tensors are kept in TF's layout (NHWC) so every elementwise op, Pad, Mean axis and Reshape means what it says in
the graph; convolutions permute to NCHW around torch's conv2d. TF 'SAME' padding is applied explicitly (it is
asymmetric: the extra row / column goes at the bottom / right), as is 'EXPLICIT'.

    g = TFJSGraph("/tmp/hm/package/models/mobileface.json")
    out = g.run(x_nhwc_float32, ["batchnorm0/add_1"])   # dict name -> numpy
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

_BYTES = {"uint8": 1, "uint16": 2, "float16": 2, "float32": 4, "int32": 4, "bool": 1}
_NP = {"float32": "<f4", "int32": "<i4", "bool": "?", "uint8": "u1", "uint16": "<u2", "float16": "<f2"}


def load_weights(model_json: Path) -> dict[str, np.ndarray]:
    """weightsManifest + shards -> name: array (dequantised to float32 where quantised)."""
    model_json = Path(model_json)
    spec = json.loads(model_json.read_text())
    out: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            stored = q["dtype"] if q else w["dtype"]
            if stored not in _NP:
                raise ValueError(f"{w['name']}: unsupported storage dtype {stored}")
            a = np.frombuffer(buf, _NP[stored], n, off)
            off += n * _BYTES[stored]
            if q and stored in ("uint8", "uint16"):
                a = a.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            if w["dtype"] == "float32":
                a = a.astype(np.float32)
            elif w["dtype"] == "int32":
                a = a.astype(np.int64)
            out[w["name"]] = np.array(a).reshape(w["shape"])
        if off != len(buf):
            raise ValueError(f"{model_json}: manifest covers {off} bytes of {len(buf)}")
    return out


def _inline_const(attr: dict) -> np.ndarray:
    """A Const node's value stored in the graph itself (small scalars / shapes)."""
    t = attr["value"]["tensor"]
    dims = [int(d.get("size", 0)) for d in t.get("tensorShape", {}).get("dim", [])]
    dt = t.get("dtype", "DT_FLOAT")
    if "tensorContent" in t:
        a = np.frombuffer(base64.b64decode(t["tensorContent"]), "<i4" if dt == "DT_INT32" else "<f4")
    elif "intVal" in t:
        a = np.array([int(v) for v in t["intVal"]])
    elif "floatVal" in t:
        a = np.array([float(v) for v in t["floatVal"]], np.float32)
    else:
        raise ValueError(f"Const without value: {t}")
    n = int(np.prod(dims)) if dims else 1
    if a.size == 1 and n != 1:
        a = np.full(n, a.item(), a.dtype)
    return a.reshape(dims)


def _attr(node: dict, key: str, default: Any = None) -> Any:
    """Decode one attr: s (base64 string), i, f, b, list of i / s."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    return default


class TFJSGraph:
    """A frozen TF.js graph model executed op by op in torch (CPU), batch of NHWC float32 images in."""

    def __init__(self, model_json: str | Path, device: str = "cpu", repair_prelu: bool = False):
        import torch
        self.torch, self.device = torch, device
        spec = json.loads(Path(model_json).read_text())
        self.nodes = {n["name"]: n for n in spec["modelTopology"]["node"]}
        self.repaired = _repair_prelu(self.nodes) if repair_prelu else []
        weights = load_weights(Path(model_json))
        self.consts: dict[str, Any] = {}
        for name, n in self.nodes.items():
            if n["op"] == "Const":
                v = weights[name] if name in weights else _inline_const(n["attr"])
                self.consts[name] = torch.from_numpy(np.ascontiguousarray(v)).to(device)
        self.inputs = [name for name, n in self.nodes.items() if n["op"] == "Placeholder"]
        self._cache: dict[tuple, Any] = {}  # pre-permuted conv filters
        self._plans: dict[tuple, list[str]] = {}
        self.ops: dict[str, Callable] = _ops(self)

    def _plan(self, outputs: tuple[str, ...]) -> list[str]:
        """Topological order of the nodes the outputs need (iterative DFS; control inputs ignored)."""
        if outputs in self._plans:
            return self._plans[outputs]
        order: list[str] = []
        seen: set[str] = set()
        for out in outputs:
            stack = [(out, False)]
            while stack:
                name, done = stack.pop()
                if done:
                    order.append(name)
                    continue
                if name in seen:
                    continue
                seen.add(name)
                stack.append((name, True))
                for i in self.nodes[name].get("input", []):
                    if not i.startswith("^") and i.split(":")[0] not in seen:
                        stack.append((i.split(":")[0], False))
        self._plans[outputs] = order
        return order

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        torch = self.torch
        vals: dict[str, Any] = {self.inputs[0]: torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)}
        with torch.inference_mode():
            for name in self._plan(tuple(outputs)):
                n = self.nodes[name]
                if name in vals:
                    continue
                if n["op"] == "Const":
                    vals[name] = self.consts[name]
                    continue
                fn = self.ops.get(n["op"])
                if fn is None:
                    raise NotImplementedError(f"op {n['op']} ({name})")
                args = [vals[i.split(":")[0]] for i in n.get("input", []) if not i.startswith("^")]
                vals[name] = fn(n, *args)
            return {o: vals[o].float().cpu().numpy() for o in outputs}

    # --- convolution helpers -------------------------------------------------------------------------------
    def filt(self, name: str, w, depthwise: bool):
        key = (name, depthwise)
        if key not in self._cache:
            if depthwise:  # [kh, kw, cin, mult] -> [cin * mult, 1, kh, kw]; TF out channel = c * mult + m
                kh, kw, cin, mult = w.shape
                wt = w.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            else:  # [kh, kw, cin, cout] -> [cout, cin, kh, kw]
                wt = w.permute(3, 2, 0, 1)
            # full convs: channels_last (an NHWC tensor seen as NCHW already is that layout, nothing is copied);
            # depthwise: plain NCHW, since torch's channels_last depthwise path on CPU is the slow generic one
            fmt = self.torch.contiguous_format if depthwise else self.torch.channels_last
            self._cache[key] = wt.float().contiguous(memory_format=fmt)
        return self._cache[key]

    def conv(self, n: dict, x, w, depthwise: bool):
        F = self.torch.nn.functional
        if _attr(n, "data_format", "NHWC") != "NHWC":
            raise NotImplementedError(f"{n['name']}: data_format {_attr(n, 'data_format')}")
        s = _attr(n, "strides", [1, 1, 1, 1])[1:3]
        d = _attr(n, "dilations", [1, 1, 1, 1])[1:3]
        if not depthwise and w.shape[0] == w.shape[1] == 1 and s == [1, 1]:  # pointwise: a matmul on NHWC
            return (x.reshape(-1, x.shape[-1]) @ w[0, 0].float()).reshape(*x.shape[:-1], w.shape[-1])
        wt = self.filt(n["input"][1].split(":")[0], w, depthwise)
        kh, kw = wt.shape[2], wt.shape[3]
        h, wd = x.shape[1], x.shape[2]
        pad = _attr(n, "padding", "VALID")
        if pad == "SAME":  # TF: out = ceil(in / s); the odd pixel of padding goes after (bottom / right)
            ph = max((-(-h // s[0]) - 1) * s[0] + (kh - 1) * d[0] + 1 - h, 0)
            pw = max((-(-wd // s[1]) - 1) * s[1] + (kw - 1) * d[1] + 1 - wd, 0)
            p4 = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        elif pad == "EXPLICIT":
            e = _attr(n, "explicit_paddings", [0] * 8)
            p4 = (e[4], e[5], e[2], e[3])
        else:
            p4 = (0, 0, 0, 0)
        xc = x.permute(0, 3, 1, 2)
        if depthwise:
            xc = xc.contiguous()
        if any(p4):
            xc = F.pad(xc, p4)
        y = F.conv2d(xc, wt, None, stride=tuple(s), dilation=tuple(d), groups=xc.shape[1] if depthwise else 1)
        return y.permute(0, 2, 3, 1)


def _repair_prelu(nodes: dict[str, dict]) -> list[str]:
    """Undo a converter artifact: PReLU written as relu(x) + alpha * (x - |x|) whose Relu was fused into the
    preceding conv, so that Abs / Sub read the *rectified* output and the PReLU degenerates to ReLU (seen in
    mobilefacenet.json's depthwise layers). The fused node loses its Relu and is renamed NAME/raw; a Relu node
    takes its name (so the Add still sees relu(x)) and Abs / Sub are pointed at NAME/raw. Returns the nodes fixed."""
    fixed = []
    for name in list(nodes):
        n = nodes[name]
        ops = _attr(n, "fused_ops", None)
        if not n["op"].startswith(("_Fused", "Fused")) or not ops or ops[-1] != "Relu":
            continue
        users = [u for u in nodes.values() if name in [i.split(":")[0] for i in u.get("input", [])]]
        if not any(u["op"] == "Abs" for u in users):
            continue
        raw = dict(n, name=name + "/raw", attr=dict(n["attr"]))
        raw["attr"]["fused_ops"] = {"list": {"s": [base64.b64encode(o.encode()).decode() for o in ops[:-1]]}}
        nodes[raw["name"]] = raw
        nodes[name] = {"name": name, "op": "Relu", "input": [raw["name"]], "attr": {}}
        for u in users:
            if u["op"] in ("Abs", "Sub"):
                u["input"] = [raw["name"] if i.split(":")[0] == name else i for i in u["input"]]
        fixed.append(name)
    return fixed


def _fused(n: dict, y, extra: list):
    """Apply a _Fused* node's fused_ops after the conv / matmul: BiasAdd, then an activation."""
    torch = __import__("torch")
    ops = _attr(n, "fused_ops", [])
    k = 0
    for op in ops:
        if op in ("BiasAdd", "Add", "AddV2"):
            y = y + extra[k]
            k += 1
        elif op == "Relu":
            y = torch.relu(y)
        elif op == "Relu6":
            y = torch.clamp(y, 0, 6)
        elif op == "Prelu":
            y = torch.where(y > 0, y, y * extra[k])
            k += 1
        elif op == "LeakyRelu":
            y = torch.where(y > 0, y, y * _attr(n, "leakyrelu_alpha", 0.2))
        elif op == "Sigmoid":
            y = torch.sigmoid(y)
        elif op == "Elu":
            y = torch.nn.functional.elu(y)
        else:
            raise NotImplementedError(f"{n['name']}: fused op {op}")
    return y


def _axes(t, rank: int) -> list[int]:
    return sorted({int(a) % rank for a in np.atleast_1d(t.cpu().numpy())})


def _reshape(n: dict, x, shape):
    s = [int(v) for v in shape.cpu().numpy()]
    if s and s[0] == 1 and x.shape[0] != 1:  # a batch dim frozen at 1 by the converter
        s[0] = -1
    return x.reshape(s)


def _matmul(n: dict, a, b):
    if _attr(n, "transpose_a", False):
        a = a.transpose(-1, -2)
    if _attr(n, "transpose_b", False):
        b = b.transpose(-1, -2)
    return a @ b.float()


def _ops(g: TFJSGraph) -> dict[str, Callable]:
    torch = g.torch
    F = torch.nn.functional
    return {
        "Conv2D": lambda n, x, w: g.conv(n, x, w, False),
        "DepthwiseConv2dNative": lambda n, x, w: g.conv(n, x, w, True),
        "_FusedConv2D": lambda n, x, w, *e: _fused(n, g.conv(n, x, w, False), list(e)),
        "FusedDepthwiseConv2dNative": lambda n, x, w, *e: _fused(n, g.conv(n, x, w, True), list(e)),
        "_FusedMatMul": lambda n, a, b, *e: _fused(n, _matmul(n, a, b), list(e)),
        "MatMul": _matmul,
        "BiasAdd": lambda n, x, b: x + b,
        "Add": lambda n, a, b: a + b,
        "AddV2": lambda n, a, b: a + b,
        "Sub": lambda n, a, b: a - b,
        "Mul": lambda n, a, b: a * b,
        "RealDiv": lambda n, a, b: a / b,
        "Minimum": lambda n, a, b: torch.minimum(a, b.to(a.dtype) if torch.is_tensor(b) else b),
        "Maximum": lambda n, a, b: torch.maximum(a, b.to(a.dtype) if torch.is_tensor(b) else b),
        "Relu": lambda n, x: torch.relu(x),
        "Relu6": lambda n, x: torch.clamp(x, 0, 6),
        "Prelu": lambda n, x, a: torch.where(x > 0, x, x * a),
        "Abs": lambda n, x: x.abs(),
        "Square": lambda n, x: x * x,
        "Rsqrt": lambda n, x: torch.rsqrt(x),
        "Sigmoid": lambda n, x: torch.sigmoid(x),
        "Softmax": lambda n, x: torch.softmax(x, dim=-1),
        "Identity": lambda n, x: x,
        "Pad": lambda n, x, p: F.pad(x, [int(v) for v in p.cpu().numpy()[::-1].reshape(-1)]),  # last dim first
        "Mean": lambda n, x, a: x.mean(dim=_axes(a, x.dim()), keepdim=_attr(n, "keep_dims", False)),
        "Sum": lambda n, x, a: x.sum(dim=_axes(a, x.dim()), keepdim=_attr(n, "keep_dims", False)),
        "Reshape": _reshape,
        "Squeeze": lambda n, x: x.squeeze(tuple(_attr(n, "squeeze_dims", []))) if _attr(n, "squeeze_dims")
        else x.squeeze(),
    }
