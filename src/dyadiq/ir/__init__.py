# SPDX-License-Identifier: Apache-2.0
"""The dyadiq IR: types, values, nodes, graphs, the op registry, printer, parser and .dyq files."""
from .builder import GraphBuilder  # noqa: F401
from .graph import Graph, Node, Value, verify  # noqa: F401
from .parser import parse_mlir  # noqa: F401
from .printer import print_mlir, print_text  # noqa: F401
from .types import QuantType, TensorType  # noqa: F401
