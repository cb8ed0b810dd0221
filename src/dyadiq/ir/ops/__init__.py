# SPDX-License-Identifier: Apache-2.0
"""All ops: importing this package registers the float and integer op sets (see each module)."""
from .registry import OPS, OpDef, infer_types, op_def, register  # noqa: F401
from . import elementwise, fake_quant, integer, nn, shape  # noqa: F401  (registration)
from . import coverage  # noqa: F401  (detector/segmenter/OCR ops, issue 15)
from . import integer_nn  # noqa: F401  (integer softmax/layernorm/embedding, issue 16)

__all__ = ["OPS", "OpDef", "infer_types", "op_def", "register"]
