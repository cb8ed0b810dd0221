# SPDX-License-Identifier: Apache-2.0
"""CPU latency of EfficientNet-Lite0 (batch 1) at 1 and 2 threads, all configs interleaved in one process:
dyadiq cpu artifacts (W8A8, W7A8 and W4A8 with the hand-scheduled x86 kernels, W8A8 with TVM's generic lowering,
optionally MetaSchedule-tuned), onnxruntime int8 (QDQ per-channel from quantize_static, u8 and s8
activations), onnxruntime fp32 and torch fp32. Each config is timed in rounds of 5 calls, the rounds of all
configs alternate, and the table gives the median call. Writes bench/results/cpu_latency.{json,md}.

Per layer (1 thread): every fast dyadiq kernel (conv/linear + requantize [+ residual add], built alone) next
to the same convolution as a one-op onnxruntime QLinearConv model (u8 activations, s8 per-channel weights),
the two timed alternately; slowest relative to onnxruntime first; column ``w7_ms``: the same layer's W7A8 kernel
(on AVX2 ``vpmaddubsw``, onnxruntime's u8 x s8 instruction sequence, exact only for 7-bit weights), timed in
the same rounds, which separates the cost of exactness from the quality of the kernels.
Writes cpu_latency_layers.{json,md}.

Column ``exact`` (1-thread rows): dyadiq artifacts are checked against the integer interpreter on the input;
onnxruntime's int8 kernels against exact integers on a saturating probe (``ort_exactness.py``: without VNNI
its u8 x s8 path uses ``vpmaddubsw`` and clips int16 pair sums).

    python bench/cpu_latency.py [--runs 50] [--tune 0]
"""
from __future__ import annotations

import argparse
import json
import os
import re
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


# ---- models (built once by the driver) ----------------------------------------------------------------
def build_models(d: Path) -> None:
    """Quantize once: ``w8.dyq``, ``w7.dyq``, ``w4.dyq``, the onnxruntime models and the input, into ``d``.
    W7A8: every layer 7-bit (weights in [-64, 63]), so every GEMM takes the u8 x s8 ``vpmaddubsw`` kernel on
    AVX2 (exact at that width); W4A8 keeps the first and last layer at 8 bits."""
    import torch

    import dyadiq
    from dyadiq.ir.serialize import save
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    model = efficientnet_lite0()
    calib = photo_crops(32, split="calib")
    x = photo_crops(1, split="eval")
    np.save(d / "x.npy", x)
    g = dyadiq.from_torch(model, (torch.from_numpy(x),))
    q, _ = dyadiq.quantize(g, calib, per_channel=True, **FAST_OPTIONS)        # latency: values do not matter
    save(dyadiq.integerize(q), d / "w8.dyq")
    q7, _ = dyadiq.quantize(g, calib, per_channel=True, weight_bits=7, **FAST_OPTIONS)
    save(dyadiq.integerize(q7), d / "w7.dyq")
    q4, _ = dyadiq.quantize(g, calib, per_channel=True, weight_bits=4, first_last_bits=8, **FAST_OPTIONS)
    save(dyadiq.integerize(q4), d / "w4.dyq")
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


def _label(name_hint: str) -> str:
    """``dq_gemm_avx2u8`` (a Relax function name, maybe with a de-duplicating number) -> ``gemm avx2u8``."""
    m = re.match(r"dq_([a-z]+)_(avx2u8|avx2|vnni)", name_hint)
    return f"{m.group(1)} {m.group(2)}" if m else name_hint


def _kernels(ig, target) -> dict:
    """conv/linear name -> (kernel class and instruction set (``_label``), its chain, its built library,
    argument shapes and dtypes)."""
    import tvm
    from tvm import relax

    from dyadiq.codegen.tvm import to_relax
    from dyadiq.codegen.x86.lower import groups, select_isa
    mod = to_relax(ig, isa=select_isa(target))
    chains = groups(ig)
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) and getattr(
        e.op, "name", "") == "relax.call_tir" else None)
    out = {}
    for c in calls:
        fn = mod[c.args[0]]
        node = fn.attrs["dyadiq.node"]
        out[node] = (_label(c.args[0].name_hint), chains[node],
                     tvm.tirx.build(fn.with_attr("global_symbol", "kernel"), target=target),
                     [(a.ty.shape, a.ty.dtype) for a in c.args[1].fields] + [(c.ty.shape, c.ty.dtype)])
    return out


def per_layer(ig, runs: int, ig7=None) -> list[dict]:
    """Each fast kernel of ``ig`` built alone vs the same conv in onnxruntime QLinearConv (1 thread); with
    ``ig7`` (the W7A8 graph) also that layer's 7-bit kernel (``vpmaddubsw`` on AVX2: onnxruntime's u8 x s8
    instruction sequence, exact at 7 bits), timed in the same rounds."""
    import tvm

    from dyadiq.ir.ops.window import hw_attrs
    from dyadiq.targets.cpu import make_target
    target = make_target()
    kernels, k7 = _kernels(ig, target), (_kernels(ig7, target) if ig7 is not None else {})
    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    rows = []

    def timer(lib, shapes):
        args = [tvm.runtime.tensor(_rand(shape, dtype, rng), dev) for shape, dtype in shapes]
        f = lib.time_evaluator("kernel", dev, number=5, repeat=1)
        return lambda: f(*args)
    for name, (kind, ch, lib, shapes) in kernels.items():
        n = ch.conv
        fns = {"tvm": (timer(lib, shapes), 1)}
        if name in k7:
            fns["tvm7"] = (timer(k7[name][2], k7[name][3]), 1)
        xt = ig.type_of(n.inputs[0])
        w = np.asarray(ig.const(n.inputs[1]), np.int8)
        if n.op == "qlinear":
            x_shape, w = (xt.shape[0], xt.shape[1], 1, 1), w.reshape(w.shape + (1, 1))
            attrs = {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1), "groups": 1}
            out_hw = (1, 1)
        else:
            _, s, p, dl = hw_attrs(n.attr_dict)
            x_shape = xt.shape
            attrs = {"pad": p, "stride": s, "dilation": dl, "groups": int(n.attr("groups", 1))}
            out_hw = ig.type_of(n.name).shape[2:]
        sess = ort_session_bytes(qlinearconv_model(list(x_shape), w, np.zeros(w.shape[0], np.int32), attrs))
        xu8 = {"x": rng.integers(0, 256, size=x_shape).astype(np.uint8)}
        fns["ort"] = ((lambda: sess.run(None, xu8)), 1)
        t = interleaved_ms(fns, runs, per_round=1)
        k = x_shape[1] // attrs["groups"] * w.shape[2] * w.shape[3]
        macs = x_shape[0] * out_hw[0] * out_hw[1] * w.shape[0] * k
        tvm_ms = t["tvm"] / 5        # one sample = one time_evaluator call = 5 kernel calls
        rows.append({"layer": n.name, "kernel": kind + (" +add" if ch.add else ""),
                     "shape": f"{x_shape[1]}x{x_shape[2]}x{x_shape[3]} -> {w.shape[0]}x{out_hw[0]}x{out_hw[1]}"
                              f" k{w.shape[2]}x{w.shape[3]} s{attrs['stride'][0]} g{attrs['groups']}",
                     "MMAC": round(macs / 1e6, 2), "dyadiq_ms": tvm_ms, "ort_qlinearconv_ms": t["ort"],
                     "dyadiq/ort": tvm_ms / t["ort"],
                     **({"w7_kernel": k7[name][0], "w7_ms": t["tvm7"] / 5, "w7/ort": t["tvm7"] / 5 / t["ort"]}
                        if "tvm7" in t else {})})
        print(rows[-1], flush=True)
    return sorted(rows, key=lambda r: -r["dyadiq/ort"])


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


# ---- one thread count per process -------------------------------------------------------------------------
def measure(args) -> None:
    import torch

    import dyadiq.targets as targets
    from dyadiq.ir.serialize import load
    d, threads = args.models, args.threads
    x = np.load(d / "x.npy")
    ig8, ig7, ig4 = load(d / "w8.dyq"), load(d / "w7.dyq"), load(d / "w4.dyq")
    arts = {W8: targets.compile(ig8), W7: targets.compile(ig7), W4: targets.compile(ig4)}
    if args.generic:
        arts[W8_GENERIC] = targets.compile(ig8, kernels="generic")
    if args.tune:
        arts[f"dyadiq cpu W8A8 per-channel (x86 kernels, rest tuned {args.tune} trials)"] = targets.compile(
            ig8, tune=args.tune)
    fns = {k: ((lambda a=a: a.run(x)), 10 if k == W8_GENERIC else 1) for k, a in arts.items()}
    for label, p in ort_models(None, None, x, d).items():
        sess = ort_session(p, threads)
        fns[label] = ((lambda s=sess: s.run(None, {"input": x})), 1)
    torch.set_num_threads(threads)
    from dyadiq.zoo import efficientnet_lite0
    model = efficientnet_lite0().eval()
    xt = torch.from_numpy(x)

    def torch_run():
        with torch.no_grad():
            model(xt)
    fns["torch fp32"] = (torch_run, 2)
    ms = interleaved_ms(fns, args.runs)
    exact = exactness(arts, {W8: ig8, W7: ig7, W4: ig4}, x) if threads == 1 else {}
    rows = [{"config": k, "threads": threads, "ms": v, "exact": exact.get(k, "")} for k, v in ms.items()]
    for r in rows:
        print(r, flush=True)
    args.rows_json.write_text(json.dumps(rows))
    if threads == 1 and args.layers:
        layer_rows = per_layer(ig8, args.layer_runs, ig7)
        cpu = cpu_description()
        meta = {"what": "each fast dyadiq kernel built alone vs one-op onnxruntime QLinearConv, same shape, 1 thread",
                "cpu": cpu["model"], "features": " ".join(cpu["features"]),
                "onnxruntime model": "QLinearConv u8 x, s8 per-channel w, int32 bias, u8 y (no fused add)",
                "runs": f"median of {args.layer_runs} alternating calls (dyadiq: mean of 5 per sample)",
                "load average (1/5/15 min) at start": " ".join(f"{v:.2f}" for v in os.getloadavg())}
        print(write_results("cpu_latency_layers", layer_rows,
                            ["layer", "kernel", "shape", "MMAC", "dyadiq_ms", "ort_qlinearconv_ms", "dyadiq/ort",
                             "w7_kernel", "w7_ms", "w7/ort"],
                            meta, args.out))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="calls per config (median)")
    ap.add_argument("--layer-runs", type=int, default=30, help="alternating samples per layer")
    ap.add_argument("--tune", type=int, default=0, help="MetaSchedule trials for a tuned variant (0: skip)")
    ap.add_argument("--no-generic", dest="generic", action="store_false",
                    help="skip the slow generic-lowering W8A8 artifact")
    ap.add_argument("--no-layers", dest="layers", action="store_false", help="skip the per-layer table")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--threads", type=int, default=0, help="internal: measure one thread count in this process")
    ap.add_argument("--models", type=Path, help="internal: folder of the prepared models")
    ap.add_argument("--rows-json", type=Path, help="internal: where a --threads run writes its rows")
    args = ap.parse_args(argv)
    if args.threads:
        return measure(args)
    rows, load = [], [os.getloadavg()]
    with tempfile.TemporaryDirectory() as d:
        build_models(Path(d))
        for threads in (1, 2):               # TVM fixes its thread pool at start-up: one process each
            env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
            f = Path(d) / f"rows{threads}.json"
            cmd = [sys.executable, __file__, "--threads", str(threads), "--models", d, "--rows-json", str(f),
                   "--runs", str(args.runs), "--layer-runs", str(args.layer_runs), "--tune", str(args.tune),
                   "--out", str(args.out)] + ([] if args.generic else ["--no-generic"]) + (
                   [] if args.layers else ["--no-layers"])
            subprocess.run(cmd, env=env, check=True)
            rows += json.loads(f.read_text())
            load.append(os.getloadavg())
    cpu = cpu_description()
    meta = {"model": "EfficientNet-Lite0 batch 1", "cpu": cpu["model"], "features": " ".join(cpu["features"]),
            "runs": f"median of {args.runs} calls per config (generic W8A8: 5 calls every 10th round, torch: "
                    "every 2nd round), in rounds of 5 calls alternating between configs, after 3 warm-up calls",
            "note": "each thread count runs in its own process (TVM_NUM_THREADS set before start-up)",
            "load average (1/5/15 min) before, after 1 thread, after 2 threads":
                " | ".join(" ".join(f"{v:.2f}" for v in la) for la in load),
            "command": "python bench/cpu_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(write_results("cpu_latency", rows, ["config", "threads", "ms", "exact"], meta, args.out))


if __name__ == "__main__":
    main()
