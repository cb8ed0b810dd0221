# SPDX-License-Identifier: Apache-2.0
"""CPU latency of EfficientNet-Lite0 (batch 1) at 1 and 2 threads, each runtime and configuration timed alone
in its own process: dyadiq cpu artifacts (W8A8, W7A8 and W4A8 with the hand-scheduled x86 kernels; optionally
W8A8 with TVM's generic lowering and a MetaSchedule-tuned W8A8), onnxruntime int8 (QDQ per-channel from
quantize_static, u8 and s8 activations), onnxruntime fp32 and torch fp32.

Why one process per configuration: TVM's thread pool spins after each call and slows any other runtime in
the same process (toolchain notes; measurements/effnet_w8a8_vnni_layers.md: onnxruntime u8s8 4.35-5.05 ms
interleaved with TVM vs 3.55-3.80 ms alone at 1 thread). So a prepare process quantizes and compiles
everything once (dyadiq artifacts saved as folders, onnxruntime models as files), then the driver runs
rounds: in round r, one process per (configuration, thread count), in an order rotated each round, each
loading its model, making ``--warmup`` calls and timing ``--calls`` calls; the table gives the median over the
calls of all rounds and the range of the per-process medians. Writes bench/results/cpu_latency.{json,md}.

Per layer (1 thread): every fast dyadiq kernel (conv/linear + requantize [+ residual add],
``codegen.x86.inventory.built_kernels``, exported as a library each) next to the same convolution as a one-op
onnxruntime QLinearConv model (u8 activations, s8 per-channel weights); each runtime's layers are timed in
their own process too (round r: the dyadiq-kernels process, the W7A8-kernels process, the onnxruntime
process), slowest relative to onnxruntime first; column ``w7_ms``: the same layer's W7A8 kernel (on AVX2
``vpmaddubsw``, onnxruntime's u8 x s8 instruction sequence, exact only for 7-bit weights), which separates the
cost of exactness from the quality of the kernels. Writes cpu_latency_layers.{json,md}.

Column ``exact`` (1-thread rows): dyadiq artifacts are checked against the integer interpreter on the input;
onnxruntime's int8 kernels against exact integers on a saturating probe (``ort_exactness.py``: without VNNI
its u8 x s8 path uses ``vpmaddubsw`` and clips int16 pair sums). Column ``kernels``: the instruction set of
dyadiq's kernels (``select_isa`` of the target: the artifact manifest's ``kernels``) and its ``mcpu``.

``--emulate-avx2`` (x86 Linux with CPUID faulting): every process runs under ``bench/avx2_host.c``, which
hides AVX-512, VNNI and AMX from CPUID, and dyadiq compiles for ``x86-64-v3``: both runtimes take the code
paths an AVX2-only CPU gets (onnxruntime's saturating ``vpmaddubsw`` u8 x s8 kernels among them) on this
host's cores. Results go to ``cpu_latency_avx2[_layers].{json,md}``.

    python bench/cpu_latency.py [--rounds 5] [--calls 20] [--mcpu NAME] [--generic] [--tune 0] [--quick]
                                [--emulate-avx2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_description, write_results  # noqa: E402
from dyadiq.passes.pipeline import FAST_OPTIONS  # noqa: E402 - the pre-default fast settings

W8, W8_GENERIC, W7, W4 = ("dyadiq cpu W8A8 per-channel (x86 kernels)",
                          "dyadiq cpu W8A8 per-channel (TVM generic, untuned)",
                          "dyadiq cpu W7A8 per-channel (x86 kernels)", "dyadiq cpu W4A8 per-channel (x86 kernels)")
ORT_U8, ORT_S8, ORT_FP32, TORCH = ("onnxruntime int8 QDQ per-channel (u8 act, s8 weights)",
                                   "onnxruntime int8 QDQ per-channel (s8 act, s8 weights)",
                                   "onnxruntime fp32", "torch fp32")
THREADS = (1, 2)
EMULATED = ("AVX2-only: every process ran under bench/avx2_host.c (CPUID reports no AVX-512, VNNI or AMX; "
            "onnxruntime and numpy take their AVX2 kernels, dyadiq compiles for x86-64-v3) on this host's cores; "
            "the features line is the host's")


def interleaved_ms(fns: dict, runs: int, per_round: int = 5, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function; rounds of ``per_round`` calls alternate between them."""
    for fn, _ in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(max(1, runs // per_round)):
        for k, (fn, every) in fns.items():
            if r % every:
                continue
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                samples[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


# ---- models (built once, in the prepare process) -----------------------------------------------------------
def quantized_graphs(d: Path, which=("w8", "w7", "w4")):
    """Quantize EfficientNet-Lite0 once into ``d``: ``x.npy`` and the integer graphs ``<which>.dyq`` (W8A8,
    W7A8: every layer 7-bit, so every GEMM takes the u8 x s8 ``vpmaddubsw`` kernel on AVX2, exact at that
    width; W4A8 keeps the first and last layer at 8 bits). Returns (the torch model, calibration data, x)."""
    import torch

    import dyadiq
    from dyadiq.ir.serialize import save
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    model = efficientnet_lite0()
    calib = photo_crops(32, split="calib")
    x = photo_crops(1, split="eval")
    np.save(d / "x.npy", x)
    g = dyadiq.from_torch(model, (torch.from_numpy(x),))
    settings = {"w8": {}, "w7": {"weight_bits": 7}, "w4": {"weight_bits": 4, "first_last_bits": 8}}
    for k in which:
        if not (d / f"{k}.dyq").exists():
            q, _ = dyadiq.quantize(g, calib, per_channel=True, **settings[k], **FAST_OPTIONS)  # values don't matter
            save(dyadiq.integerize(q), d / f"{k}.dyq")
    return model, calib, x


def build_models(d: Path) -> None:
    """Quantize once: ``w8.dyq``, ``w7.dyq``, ``w4.dyq``, the onnxruntime models and the input, into ``d``."""
    model, calib, x = quantized_graphs(d)
    ort_models(model, calib, x, d)


def ort_models(model, calib, x, d: Path) -> dict[str, Path]:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    fp32, pre = d / "fp32.onnx", d / "pre.onnx"
    if not fp32.exists():
        torch.onnx.export(model, (torch.from_numpy(x),), str(fp32), input_names=["input"], opset_version=17,
                          dynamo=False)
        quant_pre_process(str(fp32), str(pre))
    out = {"onnxruntime fp32": fp32}
    for act, name in ((QuantType.QUInt8, "u8"), (QuantType.QInt8, "s8")):
        p = d / f"qdq_{name}.onnx"
        if not p.exists():
            quantize_static(str(pre), str(p), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=act, weight_type=QuantType.QInt8)
        out[f"onnxruntime int8 QDQ per-channel ({name} act, s8 weights)"] = p
    return out


def ort_session(path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ---- per layer ------------------------------------------------------------------------------------------
def qlinearconv_model(x_shape, w: np.ndarray, bias: np.ndarray, attrs: dict):
    """A one-op ONNX QLinearConv (u8 x, s8 per-channel w, int32 bias, u8 y) with dyadiq's conv attributes."""
    from onnx import TensorProto, helper, numpy_helper
    o = w.shape[0]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in [
        ("xs", np.float32(0.02)), ("xz", np.uint8(128)), ("w", w.astype(np.int8)),
        ("ws", np.full(o, 0.01, np.float32)), ("wz", np.zeros(o, np.int8)), ("ys", np.float32(0.05)),
        ("yz", np.uint8(128)), ("b", bias.astype(np.int32))]]
    t, lft, b, r = attrs["pad"]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            strides=list(attrs["stride"]), pads=[t, lft, b, r], dilations=list(attrs["dilation"]),
                            group=attrs["groups"], kernel_shape=list(w.shape[2:]))
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def conv_spec(ig, ch) -> tuple[tuple, np.ndarray, dict, tuple]:
    """``(x_shape, int8 OIHW weights, conv attributes, output HW)`` of a chain's conv/linear as a conv."""
    from dyadiq.ir.ops.window import hw_attrs
    n = ch.conv
    xt = ig.type_of(n.inputs[0])
    w = np.asarray(ig.const(n.inputs[1]), np.int8)
    if n.op == "qlinear":
        x_shape, w = (xt.shape[0], xt.shape[1], 1, 1), w.reshape(w.shape + (1, 1))
        attrs = {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1), "groups": 1}
        return tuple(x_shape), w, attrs, (1, 1)
    _, s, p, dl = hw_attrs(n.attr_dict)
    attrs = {"pad": p, "stride": s, "dilation": dl, "groups": int(n.attr("groups", 1))}
    return tuple(xt.shape), w, attrs, tuple(ig.type_of(n.name).shape[2:])


def reduction_length(x_shape, w: np.ndarray, attrs: dict) -> int:
    """Products summed per output of a conv (``conv_spec``): ``C / groups * KH * KW``."""
    return int(x_shape[1] // attrs["groups"] * w.shape[2] * w.shape[3])


def layer_shape(ig, ch) -> tuple[str, float]:
    """``"CxHxW -> OxHxW kKHxKW sS gG"`` and the MMACs of a chain's conv/linear."""
    x_shape, w, attrs, out_hw = conv_spec(ig, ch)
    k = reduction_length(x_shape, w, attrs)
    macs = x_shape[0] * out_hw[0] * out_hw[1] * w.shape[0] * k
    return (f"{x_shape[1]}x{x_shape[2]}x{x_shape[3]} -> {w.shape[0]}x{out_hw[0]}x{out_hw[1]}"
            f" k{w.shape[2]}x{w.shape[3]} s{attrs['stride'][0]} g{attrs['groups']}", round(macs / 1e6, 2))


def prepare_layers(ig8, ig7, target, d: Path, limit: int = 0) -> list[dict]:
    """Export every fast kernel of ``ig8`` (and ``ig7``'s for the same layer) as ``d/<i>_w8.so`` /
    ``<i>_w7.so`` and the same conv as a one-op QLinearConv ``d/<i>.onnx``; returns the layer list."""
    from dyadiq.codegen.x86.inventory import built_kernels
    d.mkdir(parents=True, exist_ok=True)
    k8 = built_kernels(ig8, target)
    if limit:
        k8 = dict(list(k8.items())[:limit])
    k7 = built_kernels(ig7, target) if ig7 is not None else {}
    layers = []
    for i, (name, (label, ch, lib, shapes)) in enumerate(k8.items()):
        lib.export_library(str(d / f"{i}_w8.so"))
        entry = {"layer": name, "kernel": label + (" +add" if ch.add else ""), "w8": f"{i}_w8.so",
                 "shapes": [[list(s), dt] for s, dt in shapes]}
        if name in k7:
            k7[name][2].export_library(str(d / f"{i}_w7.so"))
            entry.update(w7=f"{i}_w7.so", w7_kernel=k7[name][0],
                         w7_shapes=[[list(s), dt] for s, dt in k7[name][3]])
        x_shape, w, attrs, _ = conv_spec(ig8, ch)
        (d / f"{i}.onnx").write_bytes(qlinearconv_model(list(x_shape), w, np.zeros(w.shape[0], np.int32), attrs))
        entry.update(onnx=f"{i}.onnx", x_shape=list(x_shape))
        entry["shape"], entry["MMAC"] = layer_shape(ig8, ch)
        entry["K"] = reduction_length(x_shape, w, attrs)
        layers.append(entry)
    return layers


def _rand(shape, dtype, rng) -> np.ndarray:
    """Random 8/16-bit data, zero for the 32/64-bit epilogue parameters (timing only)."""
    shape, dtype = [int(s) for s in shape], str(dtype)
    if dtype in ("int8", "uint8", "int16"):
        lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
        return rng.integers(lo, hi, size=shape).astype(dtype)
    return np.zeros(shape, dtype)


def ort_session_bytes(model: bytes):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def exactness(arts: dict, graphs: dict, x: np.ndarray) -> dict[str, str]:
    """Per config: is its integer arithmetic exact here? dyadiq: the artifact's output on ``x`` equals the
    integer interpreter's; onnxruntime int8: ``ort_exactness.py``'s saturation probe on one QLinearConv."""
    from dyadiq.interp.run import run as interp
    from ort_exactness import qlinearconv_error
    out = {}
    for k, ig in graphs.items():
        same = np.array_equal(arts[k].run(x), interp(ig, x, "float"))
        out[k] = "yes (= interpreter)" if same else "NO: differs from the interpreter"
    for act in ("u8", "s8"):
        err = qlinearconv_error(act)
        out[f"onnxruntime int8 QDQ per-channel ({act} act, s8 weights)"] = (
            "yes (probe)" if err == 0 else f"no: saturates, {err} codes off on the probe")
    return out


# ---- prepare: one process quantizes, compiles and checks everything ------------------------------------------
def prepare(args) -> None:
    import dyadiq.targets as targets
    from dyadiq.codegen.x86.lower import select_isa
    from dyadiq.ir.serialize import load
    from dyadiq.targets.cpu import host_cpu_flags, make_target, required_features
    d = args.models
    missing = sorted(set(required_features(make_target(args.mcpu))) - (host_cpu_flags() or set()))
    if missing:
        raise SystemExit(f"--mcpu {args.mcpu}: this CPU lacks {' '.join(missing)}, so the code cannot run here "
                         "(bench/kernel_model.py models a CPU without running on it)")
    if not all((d / f).exists() for f in ("w8.dyq", "w7.dyq", "w4.dyq", "qdq_u8.onnx", "qdq_s8.onnx", "fp32.onnx")):
        build_models(d)
    x = np.load(d / "x.npy")
    graphs = {W8: load(d / "w8.dyq"), W7: load(d / "w7.dyq"), W4: load(d / "w4.dyq")}
    arts = {k: targets.compile(g, mcpu=args.mcpu) for k, g in graphs.items()}
    checks = dict(graphs)                                     # artifact label -> the graph it must equal
    if args.generic:
        arts[W8_GENERIC] = targets.compile(graphs[W8], mcpu=args.mcpu, kernels="generic")
        checks[W8_GENERIC] = graphs[W8]
    if args.tune:
        tuned = f"dyadiq cpu W8A8 per-channel (x86 kernels, rest tuned {args.tune} trials)"
        arts[tuned] = targets.compile(graphs[W8], mcpu=args.mcpu, tune=args.tune)
        checks[tuned] = graphs[W8]
    configs = []
    for i, (label, art) in enumerate(arts.items()):
        folder = d / f"art{i}"
        art.save(folder)
        m = art.manifest
        configs.append({"config": label, "worker": f"dyadiq:{folder.name}",
                        "kernels": f"{m['kernels']} (mcpu {m['mcpu']})",
                        "required_cpu_features": m["required_cpu_features"]})
    configs += [{"config": ORT_U8, "worker": "ort:qdq_u8.onnx"}, {"config": ORT_S8, "worker": "ort:qdq_s8.onnx"},
                {"config": ORT_FP32, "worker": "ort:fp32.onnx"}, {"config": TORCH, "worker": "torch"}]
    exact = exactness(arts, checks, x)
    for c in configs:
        c["exact"] = exact.get(c["config"], "")
    target = make_target(args.mcpu)
    layers = []
    if args.layers:
        layers = prepare_layers(graphs[W8], graphs[W7], target, d / "layers", args.layer_limit)
    (d / "prepared.json").write_text(json.dumps({
        "configs": configs, "layers": layers, "target": str(target), "select_isa": select_isa(target)}))


# ---- worker: one configuration, one thread count, one process ------------------------------------------------
def worker(args) -> None:
    """Time ``args.worker`` alone in this process; write ``{"ms": [...]}`` (or per layer) to ``args.result``."""
    d, threads, kind = args.models, args.threads, args.worker
    x = np.load(d / "x.npy")
    if kind.startswith("layers-"):
        return layer_worker(args)
    if kind.startswith("dyadiq:"):
        import dyadiq.targets as targets
        art = targets.load_artifact(d / kind.split(":", 1)[1])
        fn = lambda: art.run(x)  # noqa: E731
    elif kind.startswith("ort:"):
        sess = ort_session(d / kind.split(":", 1)[1], threads)
        fn = lambda: sess.run(None, {"input": x})  # noqa: E731
    elif kind == "torch":
        import torch

        from dyadiq.zoo import efficientnet_lite0
        torch.set_num_threads(threads)
        model, xt = efficientnet_lite0().eval(), torch.from_numpy(x)

        def fn():
            with torch.no_grad():
                model(xt)
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    for _ in range(args.warmup):
        fn()
    ms = []
    for _ in range(args.calls):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    args.result.write_text(json.dumps({"ms": ms}))


def layer_worker(args) -> None:
    """``layers-w8`` / ``layers-w7``: every exported dyadiq kernel (TVM ``time_evaluator``, 5 calls per sample);
    ``layers-ort``: every one-op QLinearConv model; ``args.calls`` samples per layer after ``args.warmup``."""
    import tvm
    d = args.models / "layers"
    layers = json.loads((args.models / "prepared.json").read_text())["layers"]
    rng = np.random.default_rng(0)
    out = {}
    if args.worker == "layers-ort":
        for e in layers:
            sess = ort_session_bytes((d / e["onnx"]).read_bytes())
            xu8 = {"x": rng.integers(0, 256, size=e["x_shape"]).astype(np.uint8)}
            for _ in range(args.warmup):
                sess.run(None, xu8)
            ms = []
            for _ in range(args.calls):
                t = time.perf_counter()
                sess.run(None, xu8)
                ms.append((time.perf_counter() - t) * 1e3)
            out[e["layer"]] = ms
    else:
        tag = args.worker.split("-", 1)[1]
        dev = tvm.cpu()
        for e in layers:
            if tag not in e:
                continue
            lib = tvm.runtime.load_module(str(d / e[tag]))
            shapes = e["shapes" if tag == "w8" else f"{tag}_shapes"]
            targs = [tvm.runtime.tensor(_rand(s, dt, rng), dev) for s, dt in shapes]
            f = lib.time_evaluator("kernel", dev, number=5, repeat=args.calls, min_repeat_ms=0)
            f(*targs)                                                          # warm-up
            out[e["layer"]] = [r * 1e3 for r in f(*targs).results]              # s per call -> ms
    args.result.write_text(json.dumps({"layers": out}))


def what_is_left(kernel: str, k: int | None, ratio: float, w7_ratio: float | None) -> str:
    """Why a layer is slower than its QLinearConv (empty when it is not), by kernel class."""
    if ratio <= 1.0:
        return ""
    kind, isa = kernel.split()[:2]
    if isa == "avx2" and kind in ("gemm", "linear"):
        why = ("exact int16 vpmaddwd (8-bit weights whose channel pairs can saturate vpmaddubsw): 2 vector "
               "instructions per 16 MACs vs onnxruntime's saturating vpmaddubsw+vpmaddwd+vpaddd per 32")
        return why + (f"; the same layer's u8 kernel (W7): {w7_ratio:.2f}x" if w7_ratio else "")
    if isa in ("vnni512", "vnni") and k is not None and k <= 48:
        return (f"requantize-bound: K = {k} gives {-(-k // 4)} vpdpbusd per vector of outputs against ~8 "
                "epilogue instructions")
    return "not analysed"


# ---- driver ----------------------------------------------------------------------------------------------
def avx2_shim(d: Path) -> Path:
    """Build ``avx2_host.c`` into ``d`` (the LD_PRELOAD library that hides AVX-512 / VNNI / AMX from CPUID)."""
    from dyadiq.targets.cpu import host_cpu_flags
    if "cpuid_fault" not in (host_cpu_flags() or set()):
        raise SystemExit("--emulate-avx2: this CPU or kernel has no CPUID faulting (no cpuid_fault flag in "
                         "/proc/cpuinfo), so CPUID cannot be masked here")
    so = d / "avx2_host.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(Path(__file__).parent / "avx2_host.c"),
                    "-ldl"], check=True)
    return so


def run_worker(py_args: list[str], threads: int, result: Path) -> dict:
    """Run this script with ``py_args`` in a fresh process with ``threads`` threads; its ``result`` JSON."""
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    result.unlink(missing_ok=True)
    subprocess.run([sys.executable, __file__, *py_args, "--threads", str(threads), "--result", str(result)],
                   env=env, check=True)
    return json.loads(result.read_text()) if result.exists() else {}


def _la() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds; each runs every config once per thread count")
    ap.add_argument("--calls", type=int, default=20, help="timed calls per process (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per process first")
    ap.add_argument("--mcpu", default=None, help="LLVM CPU for dyadiq's cpu target (default: this host, detected)")
    ap.add_argument("--generic", action="store_true", help="also time the (slow) generic-lowering W8A8 artifact")
    ap.add_argument("--tune", type=int, default=0, help="MetaSchedule trials for a tuned variant (0: skip)")
    ap.add_argument("--no-layers", dest="layers", action="store_false", help="skip the per-layer table")
    ap.add_argument("--layer-rounds", type=int, default=3, help="rounds of the per-layer processes")
    ap.add_argument("--layer-calls", type=int, default=10, help="samples per layer per process")
    ap.add_argument("--layer-limit", type=int, default=0, help="only the first N layers (0: all)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 1 round of 3 calls, 4 layers; writes to "
                    "<tmp>/dyadiq-cpu-latency-quick unless --out is given (never over the real results)")
    ap.add_argument("--models-dir", type=Path, help="keep (and reuse) the prepared models here")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    ap.add_argument("--emulate-avx2", action="store_true", help="hide AVX-512/VNNI/AMX from every process's CPUID "
                    "(bench/avx2_host.c) and compile dyadiq for x86-64-v3: AVX2-only code paths on this host")
    # internal
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.warmup = 1, 3, 1
        args.layer_rounds, args.layer_calls, args.layer_limit = 1, 3, args.layer_limit or 4
        args.out = args.out or Path(tempfile.gettempdir()) / "dyadiq-cpu-latency-quick"
    args.out = args.out or Path(__file__).parent / "results"
    if args.prepare:
        return prepare(args)
    if args.worker:
        return worker(args)
    if args.emulate_avx2:
        args.mcpu = args.mcpu or "x86-64-v3"
    if args.models_dir is not None:
        args.models_dir.mkdir(parents=True, exist_ok=True)
        run(args, args.models_dir, argv)
    else:
        with tempfile.TemporaryDirectory() as d:
            run(args, Path(d), argv)


def run(args, d: Path, argv) -> None:
    load = {"start": _la()}
    suffix = ""
    if args.emulate_avx2:
        os.environ["LD_PRELOAD"] = str(avx2_shim(d))     # every worker started from here on
        suffix = "_avx2"
    cmd = ["--models", str(d)]
    run_worker(["--prepare", *cmd, "--tune", str(args.tune), "--layer-limit", str(args.layer_limit)]
               + (["--mcpu", args.mcpu] if args.mcpu else []) + (["--generic"] if args.generic else [])
               + ([] if args.layers else ["--no-layers"]), 1, d / "prepare.json")
    prep = json.loads((d / "prepared.json").read_text())
    configs = prep["configs"]
    load["after prepare"] = _la()
    samples = {(c["config"], t): [] for c in configs for t in THREADS}
    proc_medians = {k: [] for k in samples}
    for r in range(args.rounds):
        for threads in THREADS:
            order = configs[r % len(configs):] + configs[:r % len(configs)]         # rotate: no fixed position
            for c in order:
                calls = max(2, args.calls // 5) if c["config"] == W8_GENERIC else args.calls
                res = run_worker(["--worker", c["worker"], *cmd, "--calls", str(calls), "--warmup",
                                  str(args.warmup)], threads, d / "result.json")
                samples[(c["config"], threads)] += res["ms"]
                proc_medians[(c["config"], threads)].append(statistics.median(res["ms"]))
                print(f"round {r} threads {threads} {c['config']}: {statistics.median(res['ms']):.3f} ms",
                      flush=True)
    load["after the model rounds"] = _la()
    rows = []
    for threads in THREADS:
        for c in configs:
            k = (c["config"], threads)
            rows.append({"config": c["config"], "threads": threads, "ms": statistics.median(samples[k]),
                         "process medians": f"{min(proc_medians[k]):.3f}-{max(proc_medians[k]):.3f}",
                         "calls": len(samples[k]), "exact": c.get("exact", "") if threads == 1 else "",
                         "kernels": c.get("kernels", "")})
    cpu = cpu_description()
    dyq = next(c for c in configs if c["config"] == W8)
    meta = {"model": "EfficientNet-Lite0 batch 1", "cpu": f"{cpu['model']} ({cpu['cores']} cores)",
            "features": " ".join(cpu["features"]),
            "dyadiq target": f"{prep['target']}; select_isa: {prep['select_isa']}; W8A8 artifact kernels: "
                             f"{dyq['kernels']}; required CPU features: {' '.join(dyq['required_cpu_features'])}",
            "runs": f"{args.rounds} rounds; each round runs one process per config and thread count (order rotated "
                    f"each round), each process {args.warmup} warm-up calls then {args.calls} timed calls "
                    f"(generic W8A8: {max(2, args.calls // 5)}); ms: median over all rounds' calls; process "
                    "medians: range of the per-process medians",
            "note": "each config runs alone in its own process (TVM_NUM_THREADS / OMP_NUM_THREADS / onnxruntime "
                    "intra_op_num_threads / torch.set_num_threads set to the thread count)",
            "load average (1/5/15 min)": " | ".join(f"{k}: {v}" for k, v in load.items()),
            "command": "python bench/cpu_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if suffix:
        meta["emulated"] = EMULATED
    print(write_results("cpu_latency" + suffix, rows, ["config", "threads", "ms", "process medians", "calls", "exact",
                                              "kernels"], meta, args.out))
    if args.layers and prep["layers"]:
        layers_table(args, d, prep, cpu, argv, suffix)
    print(f"results in {args.out}")


def layers_table(args, d: Path, prep: dict, cpu: dict, argv, suffix: str = "") -> None:
    la = [_la()]
    workers = ["layers-w8"] + (["layers-w7"] if any("w7" in e for e in prep["layers"]) else []) + ["layers-ort"]
    samples: dict = {w: {} for w in workers}
    for r in range(args.layer_rounds):
        for w in (workers[r % len(workers):] + workers[:r % len(workers)]):
            res = run_worker(["--worker", w, "--models", str(d), "--calls", str(args.layer_calls), "--warmup",
                              str(args.warmup)], 1, d / "result.json")
            for k, v in res["layers"].items():
                samples[w].setdefault(k, []).extend(v)
            print(f"layers round {r}: {w} done", flush=True)
    la.append(_la())
    med = {w: {k: statistics.median(v) for k, v in s.items()} for w, s in samples.items()}
    rows = []
    for e in prep["layers"]:
        k, ort = e["layer"], med["layers-ort"][e["layer"]]
        row = {"layer": k, "kernel": e["kernel"], "shape": e["shape"], "MMAC": e["MMAC"],
               "dyadiq_ms": med["layers-w8"][k], "ort_qlinearconv_ms": ort, "dyadiq/ort": med["layers-w8"][k] / ort}
        if k in med.get("layers-w7", {}):
            row.update(w7_kernel=e["w7_kernel"], w7_ms=med["layers-w7"][k], w7_ort=med["layers-w7"][k] / ort)
            row["w7/ort"] = row.pop("w7_ort")
        row["what is left"] = what_is_left(e["kernel"], e.get("K"), row["dyadiq/ort"], row.get("w7/ort"))
        rows.append(row)
    rows.sort(key=lambda r: -r["dyadiq/ort"])
    by_kind: dict = {}
    for r in rows:
        a = by_kind.setdefault(r["kernel"], [0, 0.0, 0.0])
        a[0] += 1
        a[1] += r["dyadiq_ms"]
        a[2] += r["ort_qlinearconv_ms"]
    meta = {"what": "each fast dyadiq kernel built alone vs one-op onnxruntime QLinearConv, same shape, 1 thread",
            "cpu": cpu["model"], "features": " ".join(cpu["features"]),
            "dyadiq target": f"{prep['target']} (select_isa: {prep['select_isa']})",
            "onnxruntime model": "QLinearConv u8 x, s8 per-channel w, int32 bias, u8 y (no fused add)",
            "runs": f"{args.layer_rounds} rounds; each round one process for the dyadiq W8A8 kernels, one for the "
                    f"W7A8 kernels, one for onnxruntime (order rotated), each timing every layer "
                    f"{args.layer_calls} times after {args.warmup} warm-up calls (dyadiq: time_evaluator, "
                    "mean of 5 calls per sample); medians over all rounds",
            "per kernel class (layers, dyadiq ms, onnxruntime ms, ratio)": "; ".join(
                f"{k}: {n}, {a:.3f}, {b:.3f}, {a / b:.2f}" for k, (n, a, b) in sorted(by_kind.items())),
            "load average (1/5/15 min) before, after": " | ".join(la),
            "command": "python bench/cpu_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if suffix:
        meta["emulated"] = EMULATED
    print(write_results(f"cpu_latency{suffix}_layers", rows,
                        ["layer", "kernel", "shape", "MMAC", "dyadiq_ms", "ort_qlinearconv_ms", "dyadiq/ort",
                         "w7_kernel", "w7_ms", "w7/ort", "what is left"], meta, args.out))


if __name__ == "__main__":
    main()
