# SPDX-License-Identifier: Apache-2.0
"""FPGA (HLS) flow: dyadiq's hls target vs hls4ml 1.3 on the digits CNN and a digits MLP.

For each model (both trained here, deterministically, on scikit-learn's 8x8 digits):

- float: torch accuracy on the 450 test images;
- dyadiq W8A8, W4A8 (first/last layer 8 bits) and an ILP plan under ``dsp`` + ``lut`` budgets: quantize
  (nearest rounding, 8-bit activations), integerize, generate the HLS project, build the g++ C-simulation
  and run all test images through it (accuracy is the C-simulation's, which is bit-exact with the integer
  interpreter); resources / cycles from dyadiq's model (docs/hls.md), build time = codegen + g++;
- hls4ml 1.3 (Vitis backend, io_parallel, reuse factor 1) at ap_fixed<16,6> everywhere (its default) and
  with ap_fixed<8,3> weights: its own C-simulation (``hm.compile()``, ``hm.predict``); its resources and
  cycles by the SAME model rules applied to its widths (hls4ml has no estimator without Vivado), build
  time = convert + compile.

Writes bench/results/hls.{json,md}.

    python bench/hls.py [--skip-hls4ml]
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_description, write_results  # noqa: E402


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def train_mlp(d, epochs=30, seed=0):
    """The zoo MLP (64-128-64-10) trained on flattened digits."""
    import torch
    from torch import nn
    from dyadiq.zoo.blocks import MLP
    torch.manual_seed(seed)
    m = MLP()
    x = torch.from_numpy(d.x_train.reshape(len(d.x_train), 64))
    y = torch.from_numpy(d.y_train)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()
    return m.eval()


def dyadiq_rows(name, model, xs_test, y_test, calib, budget):
    import torch
    import dyadiq
    from dyadiq.codegen.hls.resources import layer_tables
    from dyadiq.passes.choose_bits import plan_bits
    from dyadiq.passes.pipeline import make_options, quantize
    from dyadiq.targets.hls import build_csim, compile_hls
    g = dyadiq.from_torch(model, (torch.from_numpy(xs_test[:1]),))
    opts = make_options(None, rounding="nearest")
    layers = None
    plans = {}
    plan, info = plan_bits(g, calib, budget, options=opts, method="measured",
                           resources=lambda p, w: layer_tables(p, w))
    layers = list(plan)
    plans["W8A8"] = {k: 8 for k in layers}
    plans["W4A8 (first/last 8)"] = {k: (8 if i in (0, len(layers) - 1) else 4) for i, k in enumerate(layers)}
    plans[f"ILP dsp<={budget.dsp:g}, lut<={budget.lut:g}"] = plan
    rows = []
    for label, p in plans.items():
        q, _ = quantize(g, calib, opts, weight_bits=p)
        ig = dyadiq.integerize(q)
        t = time.perf_counter()
        art = compile_hls(ig)
        with tempfile.TemporaryDirectory() as cache:         # a cold g++ build, not the binary cache
            art._exe = build_csim(art.files, cache=Path(cache))
            build = time.perf_counter() - t
            y = art.run_batch([xs_test[:, None]])[0][:, 0]
        res = art.manifest["hls"]["resources"]
        rows.append({"model": name, "flow": "dyadiq", "config": label,
                     "weight bits": "/".join(str(p[k]) for k in layers),
                     "acc bits": "/".join(str(r["acc_bits"]) for r in res["layers"] if r.get("weight")),
                     "accuracy": float((y.argmax(1) == y_test).mean()), "DSP": res["dsp"], "LUT": res["lut"],
                     "MAC DSP": res["mac_dsp"], "MAC LUT": res["mac_lut"],
                     "MAC latency": res["mac_latency_cycles"],
                     "latency (cycles)": res["latency_cycles"], "II (cycles)": res["ii_cycles"],
                     "build (s)": round(build, 1)})
        log(rows[-1])
    return rows


def _width(prec: str) -> int:
    m = re.search(r"<\s*(\d+)", prec)
    return int(m.group(1)) if m else 16


def hls4ml_rows(name, model, xs_test, y_test, input_shape):
    import hls4ml
    from torch import nn
    from dyadiq.codegen.hls.resources import mac_array
    if hasattr(model, "flatten") and hasattr(model, "fc3"):   # hls4ml's parser fails on the MLP's leading Flatten
        model = nn.Sequential(model.fc1, nn.ReLU(), model.fc2, nn.ReLU(), model.fc3).eval()
    rows = []
    for label, wprec in (("ap_fixed<16,6>", None), ("weights ap_fixed<8,3>, rest <16,6>", "ap_fixed<8,3>")):
        cfg = hls4ml.utils.config_from_pytorch_model(model, input_shape=input_shape, granularity="name",
                                                     default_precision="ap_fixed<16,6>", backend="Vitis")
        mods = dict(model.named_modules())
        mods.update({f"_{k}": v for k, v in list(mods.items())})      # hls4ml names Sequential children _0, _2, ..
        wbits = {}
        for lname, lcfg in cfg["LayerName"].items():
            mod = mods.get(lname)
            if mod is not None and type(mod).__name__ in ("Conv2d", "Linear"):
                prec = lcfg.setdefault("Precision", {})
                if wprec and isinstance(prec, dict):
                    prec["weight"] = wprec
                wbits[lname] = _width(wprec or "ap_fixed<16,6>")
        t = time.perf_counter()
        try:
            hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=tempfile.mkdtemp(),
                                                              backend="Vitis", io_type="io_parallel")
            hm.compile()
        except Exception as e:  # noqa: BLE001 - report the peer's failure as a row
            rows.append({"model": name, "flow": "hls4ml 1.3", "config": label, "accuracy": f"failed: {e}"[:80]})
            continue
        build = time.perf_counter() - t
        y = np.asarray(hm.predict(np.ascontiguousarray(xs_test))).reshape(len(xs_test), -1)
        dsp = lut = lat = ii = 0
        x_shape = (1,) + tuple(input_shape)
        for lname, mod in model.named_modules():
            kind = type(mod).__name__
            if kind not in ("Conv2d", "Linear"):
                continue
            w = mod.weight
            if kind == "Conv2d":
                steps = x_shape[-1] * x_shape[-2]          # 'same' padding, stride 1 (both models)
                k = int(np.prod(w.shape[1:]))
            else:
                steps, k = 1, w.shape[1]
            wb = wbits.get(lname, _width(wprec or "ap_fixed<16,6>"))
            r = mac_array(int(w.numel()), steps, k, 16, wb, 16 + int(math.ceil(math.log2(k))), 1,
                          n_weights=int(w.numel()))
            dsp, lut, lat, ii = dsp + r["dsp"], lut + r["lut"], lat + r["latency"], max(ii, r["ii"])
        rows.append({"model": name, "flow": "hls4ml 1.3", "config": label,
                     "weight bits": "/".join(str(v) for v in wbits.values()) or str(_width(wprec or "<16")),
                     "accuracy": float((y.argmax(1) == y_test).mean()), "MAC DSP": dsp, "MAC LUT": lut,
                     "MAC latency": lat, "build (s)": round(build, 1)})
        log(rows[-1])
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-hls4ml", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import torch
    from dyadiq.passes.choose_bits import Budget
    from dyadiq.zoo import digits_cnn, digits_data
    torch.set_num_threads(1)
    d = digits_data()
    cnn = digits_cnn()
    mlp = train_mlp(d)
    x_cnn, x_mlp = d.x_test, d.x_test.reshape(len(d.x_test), 1, 64)
    rows = []
    with torch.no_grad():
        for name, m, x in (("digits CNN", cnn, x_cnn), ("digits MLP", mlp, x_mlp[:, 0])):
            acc = float((m(torch.from_numpy(x)).argmax(1).numpy() == d.y_test).mean())
            rows.append({"model": name, "flow": "torch", "config": "float32", "accuracy": acc})
    calib_cnn, calib_mlp = d.x_train[:64], d.x_train[:64].reshape(64, 64)
    rows += dyadiq_rows("digits CNN", cnn, x_cnn, d.y_test, calib_cnn, Budget(dsp=800, lut=2_300_000))
    rows += dyadiq_rows("digits MLP", mlp, x_mlp[:, 0], d.y_test, calib_mlp, Budget(dsp=9000, lut=500_000))
    if not args.skip_hls4ml:
        rows += hls4ml_rows("digits CNN", cnn, x_cnn, d.y_test, (1, 8, 8))
        rows += hls4ml_rows("digits MLP", mlp, x_mlp[:, 0], d.y_test, (64,))
    cols = ["model", "flow", "config", "weight bits", "acc bits", "accuracy", "MAC DSP", "MAC LUT", "MAC latency", "DSP", "LUT",
            "latency (cycles)", "II (cycles)", "build (s)"]
    import hls4ml
    meta = {"cpu": cpu_description()["model"], "hls4ml": hls4ml.__version__, "reuse factor": 1, "io": "parallel",
            "test images": len(d.y_test), "date": time.strftime("%Y-%m-%d")}
    print(write_results("hls", rows, cols, meta, Path(args.out)))
    md = Path(args.out) / "hls.md"
    md.write_text(md.read_text() + NOTES)


NOTES = """
Notes
- accuracy: top-1 on the 450 digits test images; dyadiq rows are the g++ C-simulation of the generated
  HLS project (bit-exact with the integer interpreter), hls4ml rows its own C-simulation (`hm.predict`).
- MAC DSP / MAC LUT / MAC latency: the conv/linear MAC arrays by dyadiq's resource model (docs/hls.md:
  a product maps to LUTs when an operand is <= 4 bits, else to DSP48E2; reuse factor 1; one output pixel
  per cycle for convolutions). For hls4ml the same rules are applied to its widths (16-bit activations,
  16- or 8-bit weights); hls4ml itself has no resource estimate without Vivado. Nothing here was
  synthesized: these are model numbers, not csynth reports.
- DSP / LUT / latency / II: dyadiq's whole design (plus the requantize multipliers, one per lane, and the
  element-wise and data-movement ops).
- build: dyadiq = HLS code generation + g++ C-simulation build; hls4ml = convert + `compile()` (its g++
  build of the C-simulation library). Both on a shared 2-core machine.
- acc bits: dyadiq's accumulators at their proven exact widths (manifest `hls.acc_bits`), with 8-bit
  activations; hls4ml keeps ap_fixed<16,6> activations and accumulators.
"""


if __name__ == "__main__":
    main()
