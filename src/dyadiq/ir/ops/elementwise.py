# SPDX-License-Identifier: Apache-2.0
"""Float elementwise ops: binary with numpy broadcasting, unary activations.

``clip(min, max)`` clamps; ``hardsigmoid = clip(alpha*x + beta, 0, 1)``; ``hardswish = x*relu6(x+3)/6``;
``silu = x*sigmoid(x)``; ``gelu`` is exact (erf) or ``approximate="tanh"``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special

from ..types import TensorType
from .registry import broadcast_shape, register, same_dtype


def _binary(fn):
    def infer(t, a):
        return [TensorType(broadcast_shape(t[0].shape, t[1].shape), same_dtype(t))]

    def kernel(x, a):
        return [np.asarray(fn(x[0], x[1])).astype(x[0].dtype, copy=False)]
    return lambda: (infer, kernel)


def _unary(fn):
    def infer(t, a):
        return [t[0]]

    def kernel(x, a):
        return [np.asarray(fn(x[0], a)).astype(x[0].dtype, copy=False)]
    return lambda: (infer, kernel)


BINARY_TRAITS = {"add": {"fusable": True}, "maximum": {"clamp": True}, "minimum": {"clamp": True}}
for _name, _fn in {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
}.items():
    register(_name, 2, doc=f"elementwise {_name} with broadcasting", **BINARY_TRAITS.get(_name, {}))(_binary(_fn))


def _sigmoid(x):
    return special.expit(x)


def _gelu(x, a):
    if a.get("approximate", "none") == "tanh":
        c = np.asarray(math.sqrt(2.0 / math.pi), x.dtype)
        return 0.5 * x * (1.0 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x ** 3)))
    return 0.5 * x * (1.0 + special.erf(x / np.asarray(math.sqrt(2.0), x.dtype)))


def _clip(x, a):
    lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
    return np.clip(x, np.asarray(lo, x.dtype), np.asarray(hi, x.dtype))


def _hardsigmoid(x, a):
    alpha, beta = a.get("alpha", 1.0 / 6.0), a.get("beta", 0.5)
    return np.clip(np.asarray(alpha, x.dtype) * x + np.asarray(beta, x.dtype), 0, 1)


UNARY = {
    "identity": lambda x, a: x,
    "neg": lambda x, a: -x,
    "abs": lambda x, a: np.abs(x),
    "exp": lambda x, a: np.exp(x),
    "log": lambda x, a: np.log(x),
    "sqrt": lambda x, a: np.sqrt(x),
    "reciprocal": lambda x, a: 1 / x,
    "erf": lambda x, a: special.erf(x),
    "relu": lambda x, a: np.maximum(x, 0),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, x * np.asarray(a.get("alpha", 0.01), x.dtype)),
    "clip": _clip,
    "sigmoid": lambda x, a: _sigmoid(x),
    "tanh": lambda x, a: np.tanh(x),
    "silu": lambda x, a: x * _sigmoid(x),
    "hardsigmoid": _hardsigmoid,
    "hardswish": lambda x, a: x * np.clip(x + 3, 0, 6) / np.asarray(6, x.dtype),
    "gelu": _gelu,
}
UNARY_TRAITS = {"identity": {"moves_data": True, "quant": "inherit"}, "relu": {"clamp": True}, "clip": {"clamp": True}}
for _name, _fn in UNARY.items():
    register(_name, 1, doc=f"elementwise {_name}", pointwise=True, **UNARY_TRAITS.get(_name, {}))(_unary(_fn))
