# SPDX-License-Identifier: Apache-2.0
"""Exporters of quantized graphs to other formats. Wrappers import onnx only when called."""


def to_onnx_qdq(*a, **k):
    """The quantized graph as an ONNX QDQ ``ModelProto`` (see ``export.qdq``)."""
    from .qdq import to_onnx_qdq as f
    return f(*a, **k)


def save_onnx_qdq(*a, **k):
    """Write the ONNX QDQ model of a quantized graph to a file."""
    from .qdq import save_onnx_qdq as f
    return f(*a, **k)
