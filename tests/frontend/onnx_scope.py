# SPDX-License-Identifier: Apache-2.0
"""ONNX backend node-test cases that dyadiq deliberately does not support, one rule per reason.

A rule matches case names by regex (``re.search``). ``test_onnx_conformance.py`` runs every case whose
ops are all in the converter table; a failing case must match a rule here, and a case that matches a
rule but passes is an error too (the rule is then too wide: narrow or delete it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    pattern: str
    reason: str

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name) is not None


OUT_OF_SCOPE: tuple[Rule, ...] = (
    Rule(r"(?i)^(?!test_qlinearmatmul_)"       # its float16 scales are read as float
         r".*(b?float16|b?f16|fp16|float8|float4|e8m0|uint32|uint64|(?<![a-z])ui(32|64)|(?<![a-z])u?int[24](?![0-9])"
         r"|^test_attention_24_qk_matmul_output_mode3_softmax_precision|_string(_|$))",
         "element type outside dyadiq's f32/f64/i8..i64/u8/u16/bool (float16, bfloat16, float8/4, int2/4, "
         "uint32/64, string)"),
    Rule(r"^test_pow_types_int(32|64)_float32",
         "Pow of an integer base by a float exponent (dyadiq casts only the exponent to the base's dtype)"),
    Rule(r"^test_(averagepool|maxpool|lppool)_3d_|^test_convtranspose_3d$",
         "3-D pooling and transposed convolution (2-D only; 1-D is lifted to 2-D)"),
    Rule(r"^test_maxpool_with_argmax_", "MaxPool's Indices output"),
    Rule(r"^test_training_dropout(_default)?(_mask)?$|^test_batchnorm_\w+_training_mode$",
         "training mode (random Dropout, batch statistics); inference only"),
    Rule(r"^test_wrap_pad$", "Pad mode wrap (constant, reflect and edge only)"),
    Rule(r"^test_identity_(sequence|opt)$", "sequence and optional types"),
    Rule(r"^test_(convinteger_with(out)?_padding|matmulinteger)$",
         "ConvInteger / MatMulInteger import as float ops on dequantized operands (int32 output dtype differs)"),
    Rule(r"^test_resize_downsample_scales_(linear|cubic)_align_corners$",
         "align_corners with a fractional n * scale: dyadiq maps with the integer output length m, "
         "(n - 1)/(m - 1), as onnxruntime and torch do; the reference uses n * scale"),
    Rule(r"^test_dynamicquantizelinear_expanded$",
         "scale computed from the data at run time (x / scale lands on a rounding tie in float32)"),
    Rule(r"_(e4m3fn|e5m2)(_|$)", "float8 quantization (e4m3fn, e5m2); integer quantization only"),
    Rule(r"^test_(de)?quantizelinear_blocked", "blocked quantization (block_size)"),
)


def out_of_scope(name: str) -> Rule | None:
    """The first rule that declares case ``name`` out of scope, or None."""
    return next((r for r in OUT_OF_SCOPE if r.matches(name)), None)
