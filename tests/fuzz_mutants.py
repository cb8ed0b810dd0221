# SPDX-License-Identifier: Apache-2.0
"""Seeded mutants of dyadiq's inputs for fuzzing the CLI's bad-input contract.

``cases(seed, n, files)`` yields ``Case(kind, what, argv)``: each a command line for ``dyadiq.cli.main``
on a mutated file written under ``files.work``. Kinds:

- ``onnx-struct``: one structural edit of a small ONNX CNN (conv, depthwise conv, max/avg pool, add,
  transpose, reshape, split, concat, resize, flatten, gemm): a dim, an op type, an attribute value
  (strides, dilations, pads, kernel_shape, group, axis, perm, split sizes, resize scales), a dangling
  input, a truncated initializer, a removed node, the opset;
- ``onnx-bytes`` / ``dyq-bytes``: random byte flips or a truncation of the serialized file;
- ``manifest``: a byte flip or a structural edit (shapes, dtypes, names) of an artifact's manifest.json.

The contract checked by the callers: every command exits 0, or exits 2 with exactly one ``error:``
line on stderr; never a traceback, never a crash.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ATTR_VALUES = (0, -1, -3, 1, 2, 3, 7, 1 << 20, 1 << 40)


@dataclass(frozen=True)
class Case:
    kind: str
    what: str
    argv: tuple[str, ...]


def base_onnx(resize: bool = True):
    """A small ONNX CNN on x: float[1, 3, 16, 16] -> y: float[1, 10] exercising the registry's attributes
    (``resize``: with a Resize node, where the frontend reads it; else an Identity in its place)."""
    from onnx import TensorProto, helper, numpy_helper

    from dyadiq.frontend.onnx_ops import CONVERTERS
    resize = resize and "Resize" in CONVERTERS
    r = np.random.default_rng(0)
    init = {
        "w1": r.normal(size=(8, 3, 3, 3)).astype(np.float32), "b1": r.normal(size=8).astype(np.float32),
        "w2": r.normal(size=(8, 1, 3, 3)).astype(np.float32),
        "shape": np.array([1, 8, 64 if resize else 16], np.int64), "split": np.array([4, 4], np.int64),
        "scales": np.array([1, 1, 2, 2] if resize else [1, 1, 1, 1], np.float32),
        "wf": r.normal(size=(10, 512 if resize else 128)).astype(np.float32), "bf": r.normal(size=10).astype(np.float32),
    }
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[1, 1], pads=[1, 1, 1, 1],
          dilations=[1, 1], group=1, kernel_shape=[3, 3]),
        N("Relu", ["c1"], ["r1"], name="relu1"),
        N("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]),
        N("Conv", ["p1", "w2"], ["c2"], name="dwconv", strides=[1, 1], pads=[1, 1, 1, 1], group=8,
          kernel_shape=[3, 3]),
        N("Add", ["c2", "p1"], ["a1"], name="residual"),
        N("AveragePool", ["a1"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        N("Resize", ["p2", "", "scales"], ["u1"], name="resize", mode="nearest") if resize else
        N("Identity", ["p2"], ["u1"], name="resize"),
        N("Transpose", ["u1"], ["t1"], name="transpose", perm=[0, 1, 3, 2]),
        N("Reshape", ["t1", "shape"], ["s1"], name="reshape"),
        N("Split", ["s1", "split"], ["h1", "h2"], name="split", axis=1),
        N("Concat", ["h2", "h1"], ["k1"], name="concat", axis=1),
        N("Flatten", ["k1"], ["f1"], name="flatten", axis=1),
        N("Gemm", ["f1", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# ---- structural ONNX mutations ------------------------------------------------------------------------
def _mutate_attr(rng, m):
    from onnx import helper
    nodes = [n for n in m.graph.node if n.attribute]
    n = rng.choice(nodes)
    a = rng.choice(list(n.attribute))
    v = helper.get_attribute_value(a)
    if isinstance(v, list) and v and isinstance(v[0], int):
        v = list(v)
        choice = rng.random()
        if choice < 0.7:
            v[rng.randrange(len(v))] = rng.choice(ATTR_VALUES)
        elif choice < 0.85:
            v = v[:-1]
        else:
            v = v + [rng.choice(ATTR_VALUES)]
    elif isinstance(v, int):
        v = rng.choice(ATTR_VALUES)
    elif isinstance(v, (str, bytes)):
        v = rng.choice(["nearest", "linear", "cubic", "SAME_UPPER", "VALID", "bogus", ""])
    else:
        return f"attr {n.name}.{a.name} (unchanged)"
    n.attribute.remove(a)
    n.attribute.append(helper.make_attribute(a.name, v))
    return f"attr {n.name}.{a.name}={v}"


def _mutate_init(rng, m):
    from onnx import numpy_helper
    t = rng.choice(list(m.graph.initializer))
    try:
        a = numpy_helper.to_array(t).copy()
    except ValueError:                                           # truncated by an earlier edit
        return f"init {t.name} (already truncated)"
    c = rng.random()
    if c < 0.3 and a.size:                                       # truncated raw data
        raw = t.raw_data or a.tobytes()
        t.ClearField("float_data")
        t.ClearField("int64_data")
        t.raw_data = raw[:rng.randrange(len(raw))]
        return f"init {t.name} truncated"
    if c < 0.6 and a.size:                                       # a value (shapes, splits, scales)
        flat = a.reshape(-1)
        vals = [0, -1, -2, 3, 1 << 30] + ([1e6, np.nan, np.inf] if flat.dtype.kind == "f" else [])
        flat[rng.randrange(flat.size)] = rng.choice(vals)
        new = flat.reshape(a.shape)
    elif c < 0.8:                                                # a dim
        shape = list(a.shape) or [1]
        shape[rng.randrange(len(shape))] = rng.choice([0, 1, 2, 5])
        new = np.resize(a, shape)
    else:                                                        # a dtype
        new = a.astype(rng.choice([np.float64, np.int32, np.int8, np.float16, np.bool_]))
    t.CopyFrom(numpy_helper.from_array(np.asarray(new), t.name))
    return f"init {t.name} -> {new.dtype}{list(new.shape)}"


def _mutate(rng, m):
    from onnx import TensorProto
    kind = rng.choice(["attr", "attr", "attr", "init", "init", "dim", "op", "dangling", "remove", "opset",
                       "dtype", "output"])
    g = m.graph
    if kind == "attr":
        return _mutate_attr(rng, m)
    if kind == "init":
        return _mutate_init(rng, m)
    if kind == "dim":
        vi = rng.choice([g.input[0], g.output[0]])
        d = vi.type.tensor_type.shape.dim[rng.randrange(len(vi.type.tensor_type.shape.dim))]
        d.dim_value = rng.choice([0, 1, 2, 5, 1 << 20, 1 << 40])
        return f"dim {vi.name}"
    if kind == "op":
        n = rng.choice(list(g.node))
        n.op_type = rng.choice(["Conv", "MaxPool", "AveragePool", "Relu", "Gemm", "Softmax", "Concat",
                                "Split", "Transpose", "Reshape", "Resize", "Add", "NoSuchOp", "LRN"])
        return f"op {n.name} -> {n.op_type}"
    if kind == "dangling":
        n = rng.choice(list(g.node))
        i = rng.randrange(len(n.input) + 1)
        if i < len(n.input):
            n.input[i] = "nowhere"
        else:
            n.input.append("nowhere")
        return f"dangling input of {n.name}"
    if kind == "remove":
        n = rng.choice(list(g.node))
        g.node.remove(n)
        return f"removed {n.name}"
    if kind == "opset":
        v = rng.choice([1, 6, 9, 11, 12, 13, 21, 22, 30, 1000])
        m.opset_import[0].version = v
        return f"opset {v}"
    if kind == "dtype":
        vi = rng.choice([g.input[0], g.output[0]])
        vi.type.tensor_type.elem_type = rng.choice([TensorProto.DOUBLE, TensorProto.INT8, TensorProto.STRING,
                                                    TensorProto.BOOL, 0])
        return f"dtype {vi.name}"
    n = rng.choice(list(g.node))                                  # output: rename a node's output
    n.output[0] = rng.choice(["y", "x", "c1", "w1", ""])
    return f"output of {n.name} -> {n.output[0]!r}"


def _bytes(rng, data: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    if rng.random() < 0.3:
        k = rng.randrange(len(b))
        return bytes(b[:k]), f"truncated at {k}/{len(b)}"
    n = rng.choice([1, 1, 2, 4, 16])
    for _ in range(n):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b), f"{n} byte(s) flipped"


def _manifest(rng, text: str) -> tuple[str, str]:
    m = json.loads(text)
    c = rng.random()
    if c < 0.25:
        b, what = _bytes(rng, text.encode())
        return b.decode("latin-1"), f"manifest {what}"
    spec = rng.choice(m["inputs"] + m["outputs"])
    if c < 0.5:
        spec["shape"] = [rng.choice([0, 1, 2, 3, 16, -1, 1 << 30]) for _ in range(rng.choice([1, 2, 4, 5]))]
        return json.dumps(m), f"manifest {spec['name']} shape {spec['shape']}"
    if c < 0.7:
        spec["numpy_dtype"] = spec["dtype"] = rng.choice(["float64", "int8", "f64", "i8", "object", "bogus"])
        return json.dumps(m), f"manifest {spec['name']} dtype {spec['dtype']}"
    if c < 0.8:
        spec["name"] = rng.choice(["", "y", "x", "zz"])
        return json.dumps(m), f"manifest name {spec['name']!r}"
    if c < 0.9:
        key = rng.choice(sorted(m))
        m[key] = rng.choice([None, 0, "x", [], {}])
        return json.dumps(m), f"manifest {key} replaced"
    return json.dumps(rng.choice([[], None, 1, "x", {"format": "dyadiq.artifact"}])), "manifest replaced"


# ---- cases ----------------------------------------------------------------------------------------------
@dataclass
class Files:
    """The valid inputs mutants start from: ``onnx`` (path), ``dyq`` (a quantized tiny graph), ``x`` (an input
    array for both), ``artifact`` (a compiled folder or None), all under ``work``."""

    work: Path
    onnx: Path
    dyq: Path
    x: Path
    calib: Path
    artifact: Path | None = None


def make_files(work: Path, artifact: bool = True) -> Files:
    """Write the seeds: the ONNX CNN, its quantized .dyq, an input, calibration data and (optionally) a cpu
    artifact of the quantized graph."""
    import onnx

    import dyadiq
    from dyadiq.passes.pipeline import QuantizeOptions

    from dyadiq.passes.integerize import integerize

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    calib = rng.normal(size=(4, 1, 3, 16, 16)).astype(np.float32)[:, 0]
    np.save(work / "x.npy", x)
    np.save(work / "calib.npy", calib)
    for resize in (True, False):               # Resize where the whole flow takes it
        onnx.save(base_onnx(resize), str(work / "base.onnx"))
        g = dyadiq.from_onnx(work / "base.onnx")
        q, _ = dyadiq.quantize(g, calib, QuantizeOptions(calib_method="minmax", rounding="nearest",
                                                         bias_correct=False))
        try:
            integerize(q)
            break
        except dyadiq.DyadiqError:
            continue
    dyadiq.save(q, work / "base.dyq")
    f = Files(work, work / "base.onnx", work / "base.dyq", work / "x.npy", work / "calib.npy")
    if artifact:
        try:
            art = dyadiq.compile(q, target="cpu")
        except ImportError:
            return f
        art.save(work / "art")
        f.artifact = work / "art"
    return f


def cases(seed: int, n: int, files: Files):
    """``n`` mutant cases from ``seed`` (deterministic), each written to its own file under ``files.work``."""
    import onnx

    rng = random.Random(seed)
    base = onnx.load(str(files.onnx))
    onnx_bytes, dyq_bytes = files.onnx.read_bytes(), files.dyq.read_bytes()
    mf_text = (files.artifact / "manifest.json").read_text() if files.artifact else None
    kinds = ["onnx-struct"] * 6 + ["onnx-bytes", "dyq-bytes", "dyq-bytes"] + (["manifest"] if mf_text else [])
    d = files.work / "mutants"
    d.mkdir(exist_ok=True)
    for i in range(n):
        kind = rng.choice(kinds)
        out = str(d / f"out{i % 8}.npy")
        if kind == "onnx-struct":
            m = onnx.ModelProto()
            m.CopyFrom(base)
            what = "; ".join(_mutate(rng, m) for _ in range(rng.choice([1, 1, 1, 2, 3])))
            p = d / f"m{i % 8}.onnx"
            p.write_bytes(m.SerializeToString())
            cmd = rng.choice(["inspect", "run", "run", "quantize"])
        elif kind in ("onnx-bytes", "dyq-bytes"):
            src = onnx_bytes if kind == "onnx-bytes" else dyq_bytes
            data, what = _bytes(rng, src)
            p = d / f"m{i % 8}{'.onnx' if kind == 'onnx-bytes' else '.dyq'}"
            p.write_bytes(data)
            cmd = rng.choice(["inspect", "run"])
        else:
            text, what = _manifest(rng, mf_text)
            p = d / f"art{i % 4}"
            shutil.rmtree(p, ignore_errors=True)
            shutil.copytree(files.artifact, p)
            (p / "manifest.json").write_bytes(text.encode("latin-1"))
            cmd = "run"
        if cmd == "inspect":
            argv = ("inspect", str(p), "--format", rng.choice(["text", "json", "mlir"]))
        elif cmd == "run":
            argv = ("run", str(p), "--input", str(files.x), "-o", out)
            if kind != "manifest" and rng.random() < 0.3:
                argv += ("--mode", rng.choice(["float", "simulated", "integer"]))
        else:
            argv = ("quantize", str(p), "-o", str(d / f"q{i % 8}.dyq"), "--calib", str(files.calib),
                    "--rounding", "nearest", "--calib-method", "minmax", "--no-bias-correct")
        yield Case(kind, what, argv)
