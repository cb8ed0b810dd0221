# SPDX-License-Identifier: Apache-2.0
"""The fast x86 kernels of a graph, each built alone: for per-layer timing and for reading their assembly.

``built_kernels(ig, target)`` lowers ``ig`` the way the ``cpu`` target does (``to_relax`` with the
instruction set ``select_isa(target)`` allows), finds every kernel call (a ``call_tir`` of a function with
the ``dyadiq.node`` attribute: the conv/linear it implements) and builds that function alone as a library
with the global symbol ``kernel``. ``kernel_label`` names a kernel class and instruction set from the Relax
function name (``dq_<kind>_<isa>``, e.g. ``dq_gemm_vnni`` -> ``gemm vnni``); it does not assume a fixed list
of instruction sets, so new kernel names (``dq_gemm_vnni512``, ``dq_conv_amx``) keep working.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

KERNEL_NAME = re.compile(r"dq_([a-z]+)_([a-z0-9]+)")
SYMBOL = "kernel"


def kernel_label(name_hint: str, siblings: Iterable[str] = ()) -> str:
    """``dq_gemm_avx2u8`` -> ``gemm avx2u8``; other names are returned unchanged.

    A Relax module de-duplicates function names by appending 1, 2, ... (``dq_gemm_vnni``, ``dq_gemm_vnni1``,
    ...). Given the module's function names (``siblings``), such a number is dropped (``dq_gemm_vnni51233``
    among ``dq_gemm_vnni512``, ``dq_gemm_vnni5121``, ... is ``gemm vnni512``); without them the name is
    read as it is."""
    root = dedup_roots([name_hint, *siblings])[name_hint]
    m = KERNEL_NAME.fullmatch(root)
    return f"{m.group(1)} {m.group(2)}" if m else name_hint


def dedup_roots(names: Iterable[str]) -> dict[str, str]:
    """Each name -> the name it de-duplicates (itself for a first use). The shortest name not yet explained
    is a first use; its copies are it + 1, 2, ... for as long as they exist (TVM numbers them in order)."""
    left, out = set(names), {}
    while left:
        root = min(left, key=lambda n: (len(n), n))
        j, n = 1, root
        while n in left:
            out[n] = root
            left.discard(n)
            n, j = f"{root}{j}", j + 1
    return out


def _is_call_tir(e) -> bool:
    from tvm import relax
    return isinstance(e, relax.Call) and str(getattr(e.op, "name", "")).startswith("relax.call_tir")


def built_kernels(ig, target, isa: str | None = None) -> dict:
    """conv/linear node name -> ``(label, chain, lib, shapes)`` for every fast x86 kernel of ``ig``.

    ``label``: ``kernel_label`` of its Relax function (``"gemm vnni"``); ``chain``: its
    ``codegen.x86.lower.Chain`` (conv, requantize, optional add; None if ``groups`` does not list the node);
    ``lib``: the kernel built alone for ``target`` (global symbol ``"kernel"``; only compiled, so any
    ``mcpu`` works on any host); ``shapes``: ``[(shape, dtype), ...]`` of its arguments, the output last.
    ``isa``: the instruction set to lower with (default: ``select_isa(target)``). Empty when the target has
    no fast kernels."""
    import tvm
    from tvm import relax

    from ..tvm import to_relax
    from .lower import groups, has_vbmi, select_isa
    isa = select_isa(target) if isa is None else isa
    if isa is None:
        return {}
    mod = to_relax(ig, isa=isa, vbmi=has_vbmi(target), target=target)
    names = [gv.name_hint for gv in mod.functions]
    chains = groups(ig)
    calls: list = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if _is_call_tir(e) else None)
    out = {}
    for c in calls:
        gv = c.args[0]
        fn = mod[gv]
        node = fn.attrs.get("dyadiq.node") if fn.attrs is not None else None
        if node is None or str(node) in out:
            continue
        node = str(node)
        args = c.args[1].fields if isinstance(c.args[1], relax.Tuple) else [c.args[1]]
        outs = c.ty.fields if isinstance(c.ty, relax.TupleType) else [c.ty]
        shapes = [(tuple(int(s) for s in a.ty.shape), str(a.ty.dtype)) for a in args]
        shapes += [(tuple(int(s) for s in o.shape), str(o.dtype)) for o in outs]
        lib = tvm.tirx.build(fn.with_attr("global_symbol", SYMBOL), target=target)
        out[node] = (kernel_label(gv.name_hint, names), chains.get(node), lib, shapes)
    return out
