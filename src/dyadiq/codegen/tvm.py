# SPDX-License-Identifier: Apache-2.0
"""Integer graph -> TVM Relax module, bit-exact with the kernels of ``ir/ops/integer.py``.

Every op is built from Relax ops whose integer semantics are exact (two's complement, arithmetic
``>>``, no saturation); widths follow the numerics contract (docs/numerics.md):

- ``quantize``: ``clip(round(f64(x) / scale) + zp, qmin, qmax)``; TVM's ``round`` is ``nearbyint``
  (half to even), the division is a true float64 division.
- ``dequantize``: ``f32(f64(i64(q) - zp) * scale)``.
- ``qconv2d``: ``conv(pad(x, x_zp), w)`` in int32 (``x`` stays int8) plus ``b - x_zp * sum_chw(w)``,
  a per-output-channel constant, so ``sum((x - x_zp) * w) + b`` exactly; ``qlinear`` likewise with
  the transposed weight ``[in, out]``; ``qmatmul`` subtracts both zero points in int32 first.
- ``requantize`` / ``qadd``: ``((v * m + (1 << (s - 1))) >> s) + zp`` in int64, then the clamps.
- ``qsum`` = ``sum(x) - x_zp * n``; ``qavgpool`` = depthwise int32 conv of ``x - x_zp`` with ones
  (zero padding, ceil-mode rows padded like the interpreter); ``lut`` = ``take(table, x - in_min)``.
- ``maxpool`` pads explicitly with the dtype minimum (padding never wins) and crops to the
  interpreter's output size, so ceil mode follows dyadiq's rule, not TVM's.

Weights below 8 bits (``bits`` from the weight's QuantType) are stored packed: a little-endian bit
stream, value ``i`` (two's complement, ``bits`` wide) at bit ``i * bits``, ``ceil(bits * n / 8)``
bytes. The module unpacks them with shifts and masks (8 values per ``bits`` bytes) on every call;
the build pipeline therefore leaves out ``FoldConstant``, which would store them unpacked again.
The module's constants are the graph's constants (weights packed), plus one int32 vector per
conv/linear when ``x_zp != 0`` and it has no bias.

With ``isa`` (``"avx2"``/``"vnni"``/``"vnni512"``) every ``qconv2d|qlinear -> requantize [-> qadd]`` chain that
``codegen.x86`` covers becomes one hand-scheduled kernel (``call_tir``) instead (per layer, on AVX2, layers
whose weights fit [-64, 64] take the exact ``vpmaddubsw`` kernel, ``x86.lower.kernel_isa``): activations between such
kernels stay NHWC (``value_nhwc``; a transpose only where a generic op needs NCHW), and their weights are
pre-expanded at compile time (int16 / int8 blocks, so 4-bit weights are not unpacked per call).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import CodegenError
from ..ir.graph import Graph, Node
from ..ir.weights import WEIGHT_OPS, weight_bits  # noqa: F401  (re-exported)
from ..ir.ops.coverage import INTEGER_PREDICATES
from ..ir.ops.shape import _slices
from ..ir.ops.window import hw_attrs, pool_geometry

TVM_DTYPES = {"f32": "float32", "f64": "float64", "i4": "int8", "u4": "uint8", "i8": "int8", "u8": "uint8",
              "i16": "int16", "u16": "uint16", "i32": "int32", "i64": "int64", "i1": "bool"}


def pack_bits(w: np.ndarray, bits: int) -> np.ndarray:
    """Signed ``bits``-wide integers -> little-endian bit stream of ``ceil(bits * n / 8)`` bytes."""
    v = np.asarray(w, np.int64).reshape(-1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise CodegenError(f"weight values [{v.min()}, {v.max()}] do not fit {bits} signed bits")
    bit_idx = np.arange(bits)
    stream = ((v[:, None] >> bit_idx) & 1).astype(np.uint8).reshape(-1)          # LSB first
    return np.packbits(stream, bitorder="little")[:math.ceil(bits * v.size / 8)]


def unpack_bits(p: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of ``pack_bits`` (numpy reference for tests)."""
    stream = np.unpackbits(np.asarray(p, np.uint8), bitorder="little")[:n * bits].reshape(n, bits)
    v = (stream.astype(np.int64) << np.arange(bits)).sum(axis=1)
    return ((v ^ (1 << (bits - 1))) - (1 << (bits - 1))).astype(np.int8)


def _tvm():
    import tvm
    from tvm import relax
    return tvm, relax


def const(arr) -> "relax.Constant":
    """A Relax constant with the array's own dtype (``relax.const`` narrows int64/float64 otherwise) and
    shape (a 0-d array stays 0-d: a scalar ``gather`` index removes its axis)."""
    _, relax = _tvm()
    a = np.asarray(arr, order="C")
    return relax.const(a, str(a.dtype))


def _i64(v: int):
    return const(np.asarray(v, np.int64))


class _Emitter:
    """Walks the graph in order; ``env`` maps value names to Relax expressions."""

    def __init__(self, g: Graph, pack: bool, isa: str | None = None, vbmi: bool = False, target=None):
        tvm, relax = _tvm()
        self.g, self.pack, self.tvm, self.R, self.op = g, pack, tvm, relax, relax.op
        self.bb = relax.BlockBuilder()
        self.env: dict = {}
        self.nhwc: dict = {}              # value name -> the same rank-4 tensor in NHWC (fast kernels)
        self.flat: dict = {}              # value name -> (its NHWC tensor as [N*H*W, C], NHWC shape)
        self.isa, self.vbmi, self.target = isa, vbmi, target
        self.const = const

    def emit(self, expr):
        return self.bb.emit(expr)

    def value(self, name: str):
        if name not in self.env and (name in self.nhwc or name in self.flat):
            self.env[name] = self.emit(self.op.permute_dims(self.value_nhwc(name), [0, 3, 1, 2]))
        if name not in self.env:
            if not self.g.is_const(name):
                raise CodegenError(f"value %{name} is used before it is defined")
            self.env[name] = const(self.g.const(name))
        return self.env[name]

    def value_nhwc(self, name: str):
        """``name`` (rank 4, NCHW in the graph) as an NHWC tensor, transposed once when needed."""
        if name not in self.nhwc and name in self.flat:
            y, shape = self.flat[name]
            self.nhwc[name] = self.emit(self.op.reshape(y, shape))
        if name not in self.nhwc:
            self.nhwc[name] = self.emit(self.op.permute_dims(self.value(name), [0, 2, 3, 1]))
        return self.nhwc[name]

    def value_flat(self, name: str):
        """``name`` (rank 4) as its NHWC data seen as ``[N*H*W, C]`` (no copy between GEMM kernels)."""
        if name not in self.flat:
            x = self.value_nhwc(name)
            n, h, w, c = (int(v) for v in x.ty.shape)
            self.flat[name] = (self.emit(self.op.reshape(x, (n * h * w, c))), (n, h, w, c))
        return self.flat[name][0]

    # ---- weights --------------------------------------------------------------------------------
    def weight(self, name: str, arr: np.ndarray):
        """The weight ``arr`` (in the layout the kernel uses), unpacked in-graph when below 8 bits."""
        bits = weight_bits(self.g, name)
        if not self.pack or bits >= 8:
            return const(arr)
        op, n = self.op, arr.size
        groups = -(-n // 8)
        packed = pack_bits(arr, bits)
        p = const(packed)
        if groups * bits > packed.size:                      # whole groups of 8 values
            p = op.concat([p, const(np.zeros(groups * bits - packed.size, np.uint8))], axis=0)
        words = op.reshape(op.astype(p, "int64"), (groups, bits))
        words = op.sum(op.left_shift(words, const(np.arange(0, 8 * bits, 8, dtype=np.int64)[None])), axis=[1],
                       keepdims=True)                                                 # (G, 1): 8*bits bits
        v = op.bitwise_and(op.right_shift(words, const(np.arange(0, 8 * bits, bits, dtype=np.int64)[None])),
                           _i64((1 << bits) - 1))
        half = _i64(1 << (bits - 1))
        v = op.subtract(op.bitwise_xor(v, half), half)                                  # sign-extend
        v = op.strided_slice(op.reshape(v, (groups * 8,)), axes=[0], begin=[0], end=[n])
        return self.emit(op.astype(op.reshape(v, arr.shape), "int8"))

    # ---- ops ------------------------------------------------------------------------------------
    def quantize(self, n: Node, x):
        op, rank = self.op, self.g.type_of(n.inputs[0]).rank
        scale, zp = _per_axis(n, rank, "scale", np.float64), _per_axis(n, rank, "zero_point", np.float64)
        v = op.round(op.divide(self.cast(x, "float64"), const(scale)))
        lo, hi = _int_range(n)
        v = op.clip(op.add(v, const(zp)), lo, hi)
        return op.astype(v, TVM_DTYPES[self.g.type_of(n.name).dtype])

    def dequantize(self, n: Node, x):
        op, rank = self.op, self.g.type_of(n.inputs[0]).rank
        scale, zp = _per_axis(n, rank, "scale", np.float64), _per_axis(n, rank, "zero_point", np.int64)
        v = op.astype(op.subtract(op.astype(x, "int64"), const(zp)), "float64")
        return op.astype(op.multiply(v, const(scale)), "float32")

    def _same_int(self, x, w):
        """Operands of one integer dtype for conv/matmul (mixed signedness goes to int16/int32)."""
        dx, dw = x.ty.dtype, w.ty.dtype
        if dx == dw:
            return x, w
        wide = "int16" if max(np.dtype(str(dx)).itemsize, np.dtype(str(dw)).itemsize) == 1 else "int32"
        return self.cast(x, wide), self.cast(w, wide)

    def _bias(self, n: Node, w: np.ndarray, axes) -> np.ndarray | None:
        """``b - x_zp * sum(w)`` per output channel (int32), or None when it is all zero and absent."""
        zp = int(n.attr("x_zp", 0))
        corr = np.zeros(w.shape[0], np.int64)
        if len(n.inputs) == 3:
            corr += np.asarray(self.g.const(n.inputs[2]), np.int64).reshape(-1)
        corr -= zp * w.astype(np.int64).sum(axis=axes)
        if np.abs(corr).max(initial=0) >= 2**31:
            raise CodegenError("bias minus zero-point correction exceeds int32", node=n)
        if len(n.inputs) < 3 and not corr.any():
            return None
        return corr.astype(np.int32)

    def qconv2d(self, n: Node, x):
        op = self.op
        _, s, p, d = hw_attrs(n.attr_dict)
        if not self.g.is_const(n.inputs[1]) or (len(n.inputs) == 3 and not self.g.is_const(n.inputs[2])):
            raise CodegenError("qconv2d weight and bias must be constants", node=n)
        w = np.asarray(self.g.const(n.inputs[1]))
        zp = int(n.attr("x_zp", 0))
        pad = tuple(p)
        if zp != 0 and any(pad):
            x = self.emit(op.nn.pad(x, [0, 0, 0, 0, pad[0], pad[2], pad[1], pad[3]], "constant", float(zp)))
            pad = (0, 0, 0, 0)
        xw, ww = self._same_int(x, self.weight(n.inputs[1], w))
        acc = op.nn.conv2d(xw, ww, strides=s, padding=pad, dilation=d, groups=int(n.attr("groups", 1)),
                           out_dtype="int32")
        corr = self._bias(n, w, (1, 2, 3))
        return acc if corr is None else op.add(self.emit(acc), const(corr.reshape(1, -1, 1, 1)))

    def qlinear(self, n: Node, x):
        if not self.g.is_const(n.inputs[1]) or (len(n.inputs) == 3 and not self.g.is_const(n.inputs[2])):
            raise CodegenError("qlinear weight and bias must be constants", node=n)
        w = np.asarray(self.g.const(n.inputs[1]))
        xw, wt = self._same_int(x, self.weight(n.inputs[1], np.ascontiguousarray(w.T)))
        acc = self.op.matmul(xw, wt, out_dtype="int32")
        corr = self._bias(n, w, 1)
        return acc if corr is None else self.op.add(self.emit(acc), const(corr))

    def qmatmul(self, n: Node, a, b):
        op = self.op
        a = op.subtract(self.cast(a, "int32"), const(np.asarray(n.attr("a_zp", 0), np.int32)))
        b = op.subtract(self.cast(b, "int32"), const(np.asarray(n.attr("b_zp", 0), np.int32)))
        return op.matmul(self.emit(a), self.emit(b), out_dtype="int32")

    def _np_const(self, n: Node, i: int) -> np.ndarray:
        if not self.g.is_const(n.inputs[i]):
            raise CodegenError(f"operand %{n.inputs[i]} must be a constant", node=n)
        return np.asarray(self.g.const(n.inputs[i]), np.int64)

    def _clamp(self, y, lo: np.ndarray, hi: np.ndarray):
        """``min(max(y, lo), hi)`` with scalar bounds as one ``clip``."""
        op = self.op
        if lo.size == 1 and hi.size == 1:
            return op.clip(y, int(lo.reshape(-1)[0]), int(hi.reshape(-1)[0]))
        return op.minimum(op.maximum(y, const(_squeeze(lo))), const(_squeeze(hi)))

    def requantize(self, n: Node, acc, *_):
        # ((acc - in_zp) * m + 2^(s-1)) >> s  ==  (acc * m + c) >> s  with  c = 2^(s-1) - in_zp * m
        op = self.op
        m, s = self._np_const(n, 1), self._np_const(n, 2)
        c = (np.int64(1) << (s - 1)) - np.int64(n.attr("in_zp", 0)) * m
        y = op.add(op.multiply(self.cast(acc, "int64"), const(_squeeze(m))), const(_squeeze(c)))
        y = op.add(op.right_shift(y, const(_squeeze(s))), _i64(n.attr("out_zp", 0)))
        lo, hi = np.asarray(n.attr("qmin"), np.int64), np.asarray(n.attr("qmax"), np.int64)
        if len(n.inputs) >= 4:
            lo = np.maximum(lo, self._np_const(n, 3))
        if len(n.inputs) == 5:
            hi = np.minimum(hi, self._np_const(n, 4))
        return op.astype(self._clamp(y, lo, hi), TVM_DTYPES[n.attr("dtype")])

    def qadd(self, n: Node, a, b):
        # (a - a_zp) * a_m + (b - b_zp) * b_m + 2^(shift-1)  ==  a * a_m + b * b_m + c
        op = self.op
        a_m, b_m, shift = (int(n.attr(k)) for k in ("a_m", "b_m", "shift"))
        c = (1 << (shift - 1)) - int(n.attr("a_zp")) * a_m - int(n.attr("b_zp")) * b_m
        v = op.add(op.multiply(self.cast(a, "int64"), _i64(a_m)), op.multiply(self.cast(b, "int64"), _i64(b_m)))
        y = op.add(op.right_shift(op.add(v, _i64(c)), _i64(shift)), _i64(n.attr("out_zp")))
        y = op.clip(y, int(n.attr("qmin")), int(n.attr("qmax")))
        return op.astype(y, TVM_DTYPES[n.attr("dtype")])

    def qmul(self, n: Node, a, b):
        op = self.op
        va = op.subtract(self.cast(a, "int64"), _i64(n.attr("a_zp", 0)))
        vb = op.subtract(self.cast(b, "int64"), _i64(n.attr("b_zp", 0)))
        return op.astype(op.multiply(va, vb), "int32")

    def qsum(self, n: Node, x):
        t = self.g.type_of(n.inputs[0])
        axes = sorted({a % t.rank for a in n.attr("axes")})
        count = int(np.prod([t.shape[a] for a in axes]))
        y = self.op.sum(self.cast(x, "int32"), axis=axes, keepdims=True)
        zp = int(n.attr("x_zp", 0))
        return y if zp == 0 else self.op.subtract(self.emit(y), const(np.asarray(zp * count, np.int32)))

    def qsum_nhwc(self, n: Node):
        """``qsum`` over H and W of a value the fast kernels left in NHWC: summed in that layout (no
        transpose of the full tensor), None when not applicable."""
        name, t = n.inputs[0], self.g.type_of(n.inputs[0])
        if t.rank != 4 or name in self.env or not (name in self.nhwc or name in self.flat):
            return None
        if sorted({a % 4 for a in n.attr("axes")}) != [2, 3]:
            return None
        y = self.emit(self.op.sum(self.cast(self.value_nhwc(name), "int32"), axis=[1, 2], keepdims=True))
        zp = int(n.attr("x_zp", 0))
        if zp:
            y = self.emit(self.op.subtract(y, const(np.asarray(zp * t.shape[2] * t.shape[3], np.int32))))
        return self.op.permute_dims(y, [0, 3, 1, 2])

    def qavgpool(self, n: Node, x):
        op = self.op
        t = self.g.type_of(n.inputs[0])
        k, s, p, d = hw_attrs(n.attr_dict)
        (oh, ow), extra = pool_geometry(t.shape[2:], n.attr_dict)
        v = self.cast(x, "int32")
        if n.attr("x_zp", 0):
            v = self.emit(op.subtract(v, const(np.asarray(n.attr("x_zp"), np.int32))))
        v = self.emit(op.nn.pad(v, [0, 0, 0, 0, p[0], p[2] + extra[0], p[1], p[3] + extra[1]], "constant", 0.0))
        c = t.shape[1]
        y = self.emit(op.nn.conv2d(v, op.ones((c, 1, k[0], k[1]), "int32"), strides=s, dilation=d, groups=c,
                                   out_dtype="int32"))
        return self._crop(y, oh, ow)

    def _crop(self, y, oh: int, ow: int):
        h, w = int(y.ty.shape[2]), int(y.ty.shape[3])
        if (h, w) == (oh, ow):
            return y
        return self.op.strided_slice(y, axes=[2, 3], begin=[0, 0], end=[oh, ow])

    def maxpool(self, n: Node, x):
        op = self.op
        t = self.g.type_of(n.inputs[0])
        k, s, p, d = hw_attrs(n.attr_dict)
        (oh, ow), extra = pool_geometry(t.shape[2:], n.attr_dict)
        if any(p) or any(extra):
            low = float(np.iinfo(t.np_dtype).min) if t.dtype not in ("f32", "f64") else -np.inf
            x = self.emit(op.nn.pad(x, [0, 0, 0, 0, p[0], p[2] + extra[0], p[1], p[3] + extra[1]], "constant", low))
        y = self.emit(op.nn.max_pool2d(x, pool_size=k, strides=s, dilation=d))
        return self._crop(y, oh, ow)

    def lut(self, n: Node, x, table):
        idx = self.op.subtract(self.cast(x, "int32"), const(np.asarray(n.attr("in_min"), np.int32)))
        return self.op.take(table, self.emit(idx), axis=0, mode="clip")

    def qsoftmax(self, n: Node, x, keep=None):
        from . import tvm_nn
        return tvm_nn.qsoftmax(self, n, x, keep)

    def qdiv(self, n: Node, a, b):
        from . import tvm_nn
        return tvm_nn.qdiv(self, n, a, b)

    def qlayernorm(self, n: Node, x, g, b):
        from . import tvm_nn
        return tvm_nn.qlayernorm(self, n, x, g, b)

    def qembed(self, n: Node, ids, table):
        from . import tvm_nn
        return tvm_nn.qembed(self, n, ids, table)

    def reshape(self, n: Node, x):
        return self.op.reshape(x, tuple(self.g.type_of(n.name).shape))

    def transpose(self, n: Node, x):
        return self.op.permute_dims(x, list(n.attr("perm")))

    def concat(self, n: Node, *xs):
        return self.op.concat(list(xs), axis=int(n.attr("axis")) % self.g.type_of(n.name).rank)

    def identity(self, n: Node, x):
        return x

    def slice(self, n: Node, x):
        shape = self.g.type_of(n.inputs[0]).shape
        for ax, sl in enumerate(_slices(shape, n.attr_dict)):
            if sl == slice(None):
                continue
            idx = np.arange(shape[ax])[sl]
            if sl.step in (None, 1):
                x = self.emit(self.op.strided_slice(x, axes=[ax], begin=[int(idx[0]) if idx.size else 0],
                                                    end=[int(idx[-1]) + 1 if idx.size else 0]))
            else:
                x = self.emit(self.op.take(x, const(idx.astype(np.int64)), axis=ax))
        return x

    def pad(self, n: Node, x):
        rank = self.g.type_of(n.inputs[0]).rank
        p = n.attr("pads")
        widths = [int(v) for i in range(rank) for v in (p[i], p[i + rank])]
        mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(n.attr("mode", "constant"))
        if mode is None:
            raise CodegenError(f"pad mode {n.attr('mode')!r} is not supported", node=n)
        return self.op.nn.pad(x, widths, mode, float(n.attr("value", 0)))

    def _reduce(self, n: Node, x, fn):
        rank = self.g.type_of(n.inputs[0]).rank
        axes = [int(a) % rank for a in n.attr("axes", range(rank))]
        return fn(x, axis=axes, keepdims=bool(n.attr("keepdims", True)))

    def maximum(self, n: Node, a, b):
        return self.op.maximum(a, b)

    def minimum(self, n: Node, a, b):
        return self.op.minimum(a, b)

    def _arg(self, n: Node, x, fn):
        rank = self.g.type_of(n.inputs[0]).rank
        axis = int(n.attr("axis", 0)) % rank
        if n.attr("select_last_index", False):                 # first index of the reversed axis, mirrored
            size = self.g.type_of(n.inputs[0]).shape[axis]
            r = self.emit(fn(self.op.flip(x, axis), axis=axis, keepdims=bool(n.attr("keepdims", True))))
            return self.op.subtract(const(np.asarray(size - 1, "int64")), self.op.astype(r, "int64"))
        return self.op.astype(fn(x, axis=axis, keepdims=bool(n.attr("keepdims", True))), "int64")

    def argmax(self, n: Node, x):
        return self._arg(n, x, self.op.argmax)

    def argmin(self, n: Node, x):
        return self._arg(n, x, self.op.argmin)

    def where(self, n: Node, c, a, b):
        return self.op.where(self.cast(c, "bool"), a, b)

    def cast(self, x, dtype: str):
        x = x if isinstance(x, (self.R.Var, self.tvm.ir.expr.Constant)) else self.emit(x)
        return x if x.ty.dtype == dtype else self.emit(self.op.astype(x, dtype))

    def truth(self, x):
        """``x != 0`` as bool (numpy's truth value of an integer; a bool stays as it is)."""
        return x if x.ty.dtype == "bool" else self.emit(self.op.not_equal(x, const(np.zeros((), str(x.ty.dtype)))))

    def cast_op(self, n: Node, x):
        """``cast`` of an integer / i1 value (to i1: ``x != 0``, as numpy)."""
        to = TVM_DTYPES[n.attr("to")]
        return self.truth(x) if to == "bool" else self.op.astype(x, to)

    def arith(self, n: Node, a, b):
        """add / sub / mul of integer values (wrapping, as numpy)."""
        return {"add": self.op.add, "sub": self.op.subtract, "mul": self.op.multiply}[n.op](a, b)

    def cumsum(self, n: Node, x):
        if n.attr("exclusive", False) or n.attr("reverse", False):
            raise CodegenError("cumsum with exclusive / reverse has no TVM lowering", node=n)
        return self.op.cumsum(x, axis=int(n.attr("axis")), dtype=str(x.ty.dtype))

    def predicate(self, n: Node, *xs):
        """Comparisons and logical ops of integer / i1 values (logical ops read ``x != 0``)."""
        if n.op.startswith("logical_"):
            xs = [self.truth(x) for x in xs]
        return getattr(self.op, n.op)(*xs)

    def reduce_max(self, n: Node, x):
        return self._reduce(n, x, self.op.max)

    def reduce_min(self, n: Node, x):
        return self._reduce(n, x, self.op.min)

    def gather(self, n: Node, x, idx):
        axis = int(n.attr("axis", 0)) % self.g.type_of(n.inputs[0]).rank
        if not self.g.is_const(n.inputs[1]):
            raise CodegenError("gather indices must be a constant", node=n)
        size = self.g.type_of(n.inputs[0]).shape[axis]
        return self.op.take(x, const(np.asarray(self.g.const(n.inputs[1]), np.int64) % size), axis=axis)

    # ---- driver ---------------------------------------------------------------------------------
    def run(self):
        R, g = self.R, self.g
        params = [R.Var(name, R.TensorType(g.type_of(name).shape, TVM_DTYPES[g.type_of(name).dtype]))
                  for name in g.inputs]
        self.env.update(zip(g.inputs, params))
        chains, done = {}, set()
        if self.isa:
            from .x86 import lower as x86
            chains = x86.groups(g)
        with self.bb.function("main", params):
            with self.bb.dataflow():
                for n in g.nodes:
                    if n.name in done:
                        continue
                    if n.name in chains and self._fast(chains[n.name]):
                        done.update(m.name for m in (chains[n.name].rq, chains[n.name].add) if m is not None)
                        continue
                    fn = getattr(self, EMITTERS[n.op], None) if n.op in EMITTERS else None
                    if fn is None:
                        raise CodegenError(f"op {n.op!r} has no TVM lowering (supported: {', '.join(EMITTERS)})",
                                           node=n)
                    try:
                        ins = n.inputs[:1] if n.op in WEIGHT_OPS else n.inputs       # weights: see weight()
                        out = self.qsum_nhwc(n) if n.op == "qsum" else None
                        if out is None:
                            out = fn(n, *[self.value(i) for i in ins])
                        self.env[n.name] = self.emit(out)
                    except CodegenError:
                        raise
                    except Exception as e:  # TVM type errors: name the node
                        raise CodegenError(f"TVM lowering failed: {str(e).splitlines()[-1]}", node=n) from e
                outs = [self.value(o) for o in g.outputs]
                res = self.bb.emit_output(outs[0] if len(outs) == 1 else R.Tuple(outs))
            self.bb.emit_func_output(res)
        return self.bb.get()

    def _fast(self, chain) -> bool:
        """Lower ``chain`` (``codegen.x86.lower.Chain``) as one hand-scheduled kernel; False: not covered."""
        from .x86 import lower as x86
        try:
            return x86.lower(self, chain, self.isa)
        except CodegenError:
            raise
        except Exception as e:  # TVM schedule errors: name the node
            why = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise CodegenError(f"fast x86 kernel failed: {why}", node=chain.conv) from e


EMITTERS = {op: op for op in (
    "quantize", "dequantize", "qconv2d", "qlinear", "qmatmul", "requantize", "qadd", "qmul", "qsum", "qavgpool",
    "lut", "reshape", "transpose", "concat", "slice", "pad", "maxpool", "identity", "gather", "reduce_max",
    "reduce_min", "maximum", "minimum", "argmax", "argmin", "where",
    "qsoftmax", "qlayernorm", "qembed", "qdiv")}           # transformer ops: codegen/tvm_nn.py
EMITTERS.update({"cast": "cast_op", "add": "arith", "sub": "arith", "mul": "arith", "cumsum": "cumsum",
                 **{op: "predicate" for op in INTEGER_PREDICATES}})    # mask and position-id arithmetic


def _squeeze(a: np.ndarray) -> np.ndarray:
    """A scalar when every element is equal (cheaper broadcast), else ``a`` as is."""
    a = np.asarray(a)
    return a.reshape(-1)[0].reshape(()) if a.size and np.all(a == a.reshape(-1)[0]) else a


def _per_axis(n: Node, rank: int, key: str, dtype) -> np.ndarray:
    v = np.asarray(n.attr(key), dtype)
    axis = n.attr("axis")
    if axis is None:
        return v.reshape(-1)[0].reshape(())
    shape = [1] * rank
    shape[axis % rank] = -1
    return v.reshape(shape)


def _int_range(n: Node) -> tuple[int, int]:
    from ..ir.types import int_range
    return int_range(int(n.attr("bits")), bool(n.attr("signed")))


def to_relax(ig: Graph, *, pack_weights: bool = True, isa: str | None = None, vbmi: bool = False, target=None):
    """Relax ``IRModule`` with one function ``main(*graph inputs)`` computing the integer graph ``ig``.

    ``isa`` (``"avx2"``, ``"vnni"`` or ``"vnni512"``, see ``codegen.x86``): lower conv/linear + requantize [+ qadd]
    chains to hand-scheduled x86 kernels on NHWC activations (weights pre-expanded at compile time; on
    AVX2 the channels feeding 8-bit layers are reordered where that makes them exact on ``vpmaddubsw``,
    ``codegen.x86.pairing``); None: generic Relax ops only. ``vbmi``: the target has AVX-512 VBMI (the
    ``"vnni512"`` depthwise kernel then takes four kernel rows per instruction, ``x86.depthwise``). With
    ``isa``, int8 activations between kernels are stored as uint8 ``x + 128`` (``x86.unsigned``: the u8 x s8
    GEMMs read them without a copy). ``target``: the TVM target the module will be built for; the x86
    lowering compiles a few candidate kernels for it to turn down register tiles that spill
    (``x86.gemm.choose_tile``; None: a generic CPU with ``isa``)."""
    if isa == "avx2":
        from .x86.pairing import permute_channels
        ig = permute_channels(ig)
    if isa:
        from .x86.unsigned import unsigned_activations
        ig = unsigned_activations(ig)
    return _Emitter(ig, pack_weights, isa, vbmi, target).run()


def module_constants(mod) -> list[np.ndarray]:
    """The tensor constants of ``mod["main"]`` (what the built library stores)."""
    tvm, relax = _tvm()
    found: list = []

    def visit(e):
        if isinstance(getattr(e, "value", None), tvm.runtime.Tensor) and not any(e.same_as(f) for f in found):
            found.append(e)
    relax.analysis.post_order_visit(mod["main"], visit)
    return [e.value.numpy() for e in found]

