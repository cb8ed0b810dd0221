# SPDX-License-Identifier: Apache-2.0
"""Is onnxruntime's int8 convolution exact on this CPU? One QLinearConv on adversarial data vs exact integers.

Without VNNI, onnxruntime's u8 x s8 kernels multiply with the saturating ``vpmaddubsw`` (int16 pair sums):
``a0*w0 + a1*w1`` with large activations and same-sign full-range weights leaves int16 and is clipped.
The probe builds such data (weights +-127, activations 200-255 (u8) or -128 / 127 (s8), zero points 0 so the raw products are
large), runs the one-op model and reports the largest deviation, in output codes, from
``round(sum(x w) * sx sw / sy) + zy`` computed in int64.

    python bench/ort_exactness.py          # prints {"u8": max_error, "s8": max_error}
"""
from __future__ import annotations

import json

import numpy as np


def qlinearconv_error(act: str = "u8", c: int = 64, o: int = 32, hw: int = 8, seed: int = 0) -> int:
    """Largest |onnxruntime - exact| output code of a 1x1 QLinearConv on saturating data (0: exact)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((o, c, 1, 1)) < 0.5, 127, -127).astype(np.int8)
    if act == "u8":
        x, xdt, ydt, yz = rng.integers(200, 256, (1, c, hw, hw)).astype(np.uint8), TensorProto.UINT8, np.uint8, 128
    else:
        x = np.where(rng.random((1, c, hw, hw)) < 0.5, -128, 127).astype(np.int8)
        xdt, ydt, yz = TensorProto.INT8, np.int8, 0
    sx, sw, sy = 0.02, 0.01, 2.0                        # output = acc * 1e-4: in range, no clipping
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in [
        ("xs", np.float32(sx)), ("xz", np.zeros((), x.dtype)), ("w", w), ("ws", np.full(o, sw, np.float32)),
        ("wz", np.zeros(o, np.int8)), ("ys", np.float32(sy)), ("yz", np.asarray(yz, ydt)),
        ("b", np.zeros(o, np.int32))]]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=[1, 1])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", xdt, list(x.shape))],
                              [helper.make_tensor_value_info("y", xdt, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    y = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    acc = np.einsum("nchw,oc->nohw", x.astype(np.int64), w[:, :, 0, 0].astype(np.int64))
    lo, hi = np.iinfo(ydt).min, np.iinfo(ydt).max
    ref = np.clip(np.rint(acc * (sx * sw / sy)) + yz, lo, hi)
    return int(np.abs(ref - y.astype(np.int64)).max())


if __name__ == "__main__":
    print(json.dumps({a: qlinearconv_error(a) for a in ("u8", "s8")}))
