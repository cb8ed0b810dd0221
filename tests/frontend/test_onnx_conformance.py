# SPDX-License-Identifier: Apache-2.0
"""The onnx package's backend node tests, run through ``from_onnx`` and the float interpreter.

Every case whose nodes all use converted op types is imported and run on each of its data sets and
compared like onnx's backend test (floats: rtol 1e-3, atol 1e-7; ints and bools exact; same dtype).
The node tests feed parameters such as Reshape's shape or Slice's starts as graph inputs; dyadiq needs
those at import time (static shapes), so graph inputs that reach a parameter slot (``onnx_ops.PARAMS``,
not through Shape/Size) are frozen into initializers from the data set. A failure fails the test unless
``onnx_scope.OUT_OF_SCOPE`` declares the case, and a declared case must not pass.

Each in-scope case with several inputs runs a second time with every input but the first frozen, the
way weights arrive in real models: that exercises the constant paths (Gemm/MatMul -> linear, folding).
"""
from __future__ import annotations

import collections
import time
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from dyadiq.frontend.onnx import DEFAULT_DOMAINS, from_onnx  # noqa: E402
from dyadiq.frontend.onnx_ops import CONVERTERS, PARAMS  # noqa: E402
from dyadiq.interp import run  # noqa: E402

from .onnx_scope import OUT_OF_SCOPE, out_of_scope  # noqa: E402


MIN_PASSING = 1000          # in-scope cases that pass (1112 with onnx 1.23); a converter lost lowers it


def _collect():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return collect_testcases(None)


def _supported(case) -> bool:
    return all(n.op_type in CONVERTERS and n.domain in DEFAULT_DOMAINS for n in case.model.graph.node)


def _param_inputs(graph) -> set[str]:
    """Values that feed a parameter slot (the walk stops at Shape/Size, which read only the type)."""
    producer = {o: n for n in graph.node for o in n.output}
    stack = [n.input[i] for n in graph.node for i in PARAMS[n.op_type] if i < len(n.input) and n.input[i]]
    seen: set[str] = set()
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            n = producer.get(v)
            if n is not None and n.op_type not in ("Shape", "Size"):
                stack.extend(i for i in n.input if i)
    return seen


def _runtime_inputs(model) -> list[str]:
    return [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]


def _freeze(model, inputs, weights: bool = False):
    """(model with parameter inputs (and with ``weights`` all but the first) as initializers, other inputs)."""
    g = model.graph
    names = _runtime_inputs(model)
    params = (_param_inputs(g) | (set(names[1:]) if weights else set())) & set(names)
    if not params:
        return model, list(inputs)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in params]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for name, arr in zip(names, inputs):
        if name in params:
            m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(arr), name))
    return m, [a for n, a in zip(names, inputs) if n not in params]


def _compare(got, want) -> str | None:
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != {want.dtype}"
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    try:
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_array_equal(got, want)
    except AssertionError as e:
        return " ".join(str(e).split())[:300]
    return None


def _arrays(values) -> list:
    """Test data as numpy arrays (a few cases store TensorProtos)."""
    return [onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v for v in values]


def run_case(case, weights: bool = False) -> str | None:
    """None when every data set matches, else the first problem."""
    try:
        graph = None
        for inputs, outputs in case.data_sets:
            inputs, outputs = _arrays(inputs), _arrays(outputs)
            model, feed = _freeze(case.model, inputs, weights)
            if graph is None or model is not case.model:
                graph = from_onnx(model, notes=[])          # old opsets: converted, the note kept quiet
            with np.errstate(all="ignore"):
                got = run(graph, feed)
            got = got if isinstance(got, list) else [got]
            if len(got) != len(outputs):
                return f"{len(got)} outputs, expected {len(outputs)}"
            for k, (y, ref) in enumerate(zip(got, outputs)):
                problem = _compare(np.asarray(y), np.asarray(ref))
                if problem:
                    return f"output {k}: {problem}"
    except Exception as e:  # noqa: BLE001  (any failure of a supported case is a finding)
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return None


def test_onnx_backend_node_cases():
    t0 = time.perf_counter()
    cases = _collect()
    supported = [c for c in cases if _supported(c)]
    passed, failed, unexpected, frozen, weights_ran = 0, [], [], 0, 0
    declared: collections.Counter[str] = collections.Counter()
    used_rules: set[str] = set()
    for case in supported:
        problem = run_case(case)
        rule = out_of_scope(case.name)
        frozen += bool(_param_inputs(case.model.graph) & set(_runtime_inputs(case.model)))
        if rule is not None:
            used_rules.add(rule.pattern)
            if problem is None:
                unexpected.append(f"{case.name} (rule {rule.pattern!r})")
            else:
                declared[rule.reason] += 1
        elif problem is not None:
            failed.append(f"{case.name}: {problem}")
        elif len(_runtime_inputs(case.model)) > 1 and (problem := run_case(case, weights=True)) is not None:
            failed.append(f"{case.name} (inputs after the first as constants): {problem}")
        else:
            passed += 1
            weights_ran += len(_runtime_inputs(case.model)) > 1
    out = sum(declared.values())
    print(f"\nONNX backend node tests: {len(cases)} collected, {len(supported)} in supported ops, all ran: "
          f"{len(supported) - out - len(unexpected)} in scope ({passed} passed, {len(failed)} failed), "
          f"{out} declared out of scope ({time.perf_counter() - t0:.1f} s)")
    print(f"  {frozen} cases ran with shape/axes/pads inputs frozen as constants; {weights_ran} passing cases "
          f"also passed with every input after the first as a constant")
    for reason, n in declared.most_common():
        print(f"  {n:4d}  {reason}")
    stale = [r.pattern for r in OUT_OF_SCOPE if r.pattern not in used_rules]
    if stale:
        print(f"  rules matching no supported case: {stale}")
    assert not failed, f"{len(failed)} supported cases fail:\n" + "\n".join(failed)
    assert passed >= MIN_PASSING, f"only {passed} cases pass in scope (at least {MIN_PASSING} did)"
    assert not unexpected, "declared out of scope but pass (narrow onnx_scope.py):\n" + "\n".join(unexpected)
