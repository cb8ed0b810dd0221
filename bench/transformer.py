# SPDX-License-Identifier: Apache-2.0
"""MiniLM-L6 (all-MiniLM-L6-v2) integer-only sentence embeddings: accuracy against float and CPU latency.

    nice -n 19 python bench/transformer.py [--sentences 256] [--calib 32] [--rounds 8] [--work DIR]

Accuracy: ``--sentences`` deterministic English sentences (``zoo.minilm.sentences``: standard-library
docstrings), tokenized to 128; the integer cpu artifact's pooled output (L2-normalized) against the float
model's sentence-transformers embedding of each sentence unpadded: cosine, and nearest-neighbour agreement
on the retrieval set of all sentences (each one's nearest other sentence by float vs by integer
embeddings). The artifact is checked bit-exact against the integer interpreter on ``--exact`` sentences.
Latency: batch 1, sequence 128, 1 thread; dyadiq's integer cpu artifact, onnxruntime fp32 and
onnxruntime ``quantize_dynamic`` int8 of the same model (ONNX opset 17), each in its own process, the
processes alternating over ``--rounds`` rounds; the median of all calls. A per-op table (TVM's Relax VM
instrument hook, one run, 1 thread) says where dyadiq's time goes. Results: bench/results/transformer.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
SEQ = 128
RUNTIMES = ("dyadiq_int", "ort_fp32", "ort_int8_dynamic")


def quantized_graph(work: Path, n_calib: int, gelu_bits: int = 8):
    """Quantize MiniLM (SmoothQuant on LayerNorm -> linear, 16-bit residual stream, ``gelu_bits``-wide GELU
    outputs (the FFN-output linears' inputs), 8-bit elsewhere)."""
    import torch

    import dyadiq
    from dyadiq.ir import serialize
    from dyadiq.passes.smooth_quant import smooth_quant
    from dyadiq.zoo.minilm import minilm, sentences, tokenize, wide_values
    path = work / "minilm_q.dyq"
    if path.exists():
        return serialize.load(path)
    cal = tokenize(sentences(n_calib, skip=300))
    g = dyadiq.from_torch(minilm(SEQ), (torch.from_numpy(cal[:1]),))
    g = smooth_quant(g, [{g.inputs[0]: cal[i:i + 1]} for i in range(min(8, n_calib))])
    bits = {**wide_values(g), **{n.name: gelu_bits for n in g.nodes if n.op == "gelu" and gelu_bits != 8}}
    q, _ = dyadiq.quantize(g, cal, calib_method="minmax", rounding="nearest", per_channel=True,
                           act_bits_by_value=bits)
    serialize.save(q, path)
    return q


def build(work: Path, n_calib: int, gelu_bits: int = 8) -> None:
    """The artifact and the two onnxruntime models, in ``work``."""
    import dyadiq
    from dyadiq.zoo.minilm import export_onnx
    if not (work / "cpu").exists():
        ig = dyadiq.integerize(quantized_graph(work, n_calib, gelu_bits))
        dyadiq.compile(ig, target="cpu").save(work / "cpu")
    if not (work / "fp32.onnx").exists():
        export_onnx(work / "fp32.onnx", SEQ, dynamic=False)
    if not (work / "int8.onnx").exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(str(work / "fp32.onnx"), str(work / "int8.onnx"), weight_type=QuantType.QInt8)


def accuracy(work: Path, n: int, n_exact: int) -> dict:
    import dyadiq
    from dyadiq.interp import run
    from dyadiq.zoo.minilm import minilm, reference_embeddings, sentences, tokenize
    ids = tokenize(sentences(n), SEQ)
    art = dyadiq.load_artifact(work / "cpu")
    got = np.concatenate([np.asarray(art.run(ids[i:i + 1])) for i in range(n)]).astype(np.float64)
    ig = art.graph
    exact = all(np.array_equal(np.asarray(run(ig, {ig.inputs[0]: ids[i:i + 1]}, mode="integer")), got[i:i + 1])
                for i in range(n_exact))
    ref = reference_embeddings(minilm(SEQ), ids).astype(np.float64)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cos = (got * ref).sum(1)
    nn = []
    for e in (ref, got):
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        nn.append(s.argmax(1))
    return {"sentences": n, "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
            "nn_agreement": float((nn[0] == nn[1]).mean()), "bit_exact_sentences": n_exact if exact else 0,
            "tokens_mean": float((ids != 0).sum(1).mean())}


def worker(kind: str, work: Path, calls: int) -> None:
    """One process: ``calls`` timed calls (after warm-up) of one runtime; prints the times (ms) as JSON."""
    from dyadiq.zoo.minilm import sentences, tokenize
    ids = tokenize(sentences(1), SEQ)
    if kind == "dyadiq_int":
        import dyadiq
        art = dyadiq.load_artifact(work / "cpu")
        fn = lambda: art.run(ids)
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        path = work / ("fp32.onnx" if kind == "ort_fp32" else "int8.onnx")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        fn = lambda: sess.run(None, {"ids": ids})
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(times))


def latency(work: Path, rounds: int, calls: int) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS="1", OMP_NUM_THREADS="1")
    samples: dict[str, list[float]] = {k: [] for k in RUNTIMES}
    for _ in range(rounds):
        for kind in RUNTIMES:
            out = subprocess.run([sys.executable, __file__, "--worker", kind, "--work", str(work),
                                  "--calls", str(calls)], env=env, capture_output=True, text=True, check=True)
            samples[kind] += json.loads(out.stdout.strip().splitlines()[-1])
    return {k: statistics.median(v) for k, v in samples.items()}


def per_op(work: Path, top: int = 12) -> list[dict]:
    """Time of every kernel call of one run (Relax VM instrument hook, 1 thread), grouped by kernel name,
    largest total first."""
    import tvm
    from tvm import relax

    import dyadiq
    from dyadiq.zoo.minilm import sentences, tokenize
    art = dyadiq.load_artifact(work / "cpu")
    vm = relax.VirtualMachine(art.module, tvm.cpu())
    ids = tokenize(sentences(1), SEQ)
    x = tvm.runtime.tensor(ids) if hasattr(tvm.runtime, "tensor") else tvm.nd.array(ids)
    rows: dict[str, list[float]] = {}
    start: dict[str, float] = {}

    def hook(func, name, before, ret, *args):
        if before:
            start[name] = time.perf_counter()
        else:
            rows.setdefault(name, []).append((time.perf_counter() - start[name]) * 1e3)
        return 0
    vm["main"](x)
    vm.set_instrument(hook)
    vm["main"](x)
    total = sum(sum(v) for v in rows.values())
    out = [{"kernel": _short(k), "calls": len(v), "ms": sum(v), "share": sum(v) / total} for k, v in rows.items()]
    return sorted(out, key=lambda r: -r["ms"])[:top]


def _short(kernel: str) -> str:
    """A fused kernel's name without its numbering, at most 12 ops shown."""
    parts = [p.rstrip("0123456789") for p in kernel.split("_") if p and p not in ("tir", "fused")]
    return "_".join(parts[:12]) + ("_..." if len(parts) > 12 else "")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--exact", type=int, default=16, help="sentences checked bit-exact against the interpreter")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=10, help="timed calls per process")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dyadiq_bench_transformer"))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--gelu-bits", type=int, default=8, help="width of the GELU outputs (fc2 inputs)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--worker", choices=RUNTIMES)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.work, args.calls)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["TVM_NUM_THREADS"] = "1"
    build(args.work, args.calib, args.gelu_bits)
    acc = accuracy(args.work, args.sentences, args.exact)
    print(json.dumps(acc), flush=True)
    if args.skip_latency:
        return
    lat = latency(args.work, args.rounds, args.calls)
    print(json.dumps(lat), flush=True)
    ops = per_op(args.work)
    sys.path.insert(0, str(HERE))
    from common import cpu_description, write_results
    meta = {"cpu": cpu_description(), **{f"accuracy.{k}": v for k, v in acc.items()},
            "latency": "batch 1, sequence 128, 1 thread, median ms over "
                       f"{args.rounds} alternating rounds x {args.calls} calls, one process per runtime and round",
            "quantization": "SmoothQuant(alpha 0.5) LayerNorm->linear, minmax ranges, per-channel 8-bit weights, "
                            "8-bit activations, 16-bit residual stream / scores / GELU inputs / q, v / pooled output, "
                            f"{args.gelu_bits}-bit GELU outputs"}
    rows = [{"runtime": k, "ms": v, "vs_ort_int8": v / lat["ort_int8_dynamic"]} for k, v in lat.items()]
    md = write_results("transformer", rows, ["runtime", "ms", "vs_ort_int8"], meta, args.out)
    op_md = ["| kernel | calls | ms | share |", "|---|---|---|---|"]
    op_md += [f"| {r['kernel']} | {r['calls']} | {r['ms']:.3f} | {r['share']:.3f} |" for r in ops]
    with open(args.out / "transformer.md", "a") as f:
        f.write("\n## Where dyadiq's time goes (one run, 1 thread, Relax VM instrument hook, top kernels)\n\n"
                + "\n".join(op_md) + "\n")
    print(md)


if __name__ == "__main__":
    main()
