# SPDX-License-Identifier: Apache-2.0
"""Per-layer, per-bitwidth latency tables measured on the target (input of a ``--latency-budget``).

For every conv2d/linear layer ``l`` of a (prepared) float graph and every candidate width ``b``, the layer
alone is quantized (``b``-bit weights, ``act_bits`` activations, no bias correction: values do not change
the speed), lowered without the float entry/exit (``integerize(raw=True)``: the integer conv/linear with
its int32 accumulator and the dyadic requantize to the output codes), built with dyadiq's own target
(``dyadiq.targets.compile``) and run on random input codes:

    latency_l(b) = median over ``repeats`` timed runs of ``artifact.run(x)``   (after ``warmup`` runs)

in milliseconds, one call each, so each entry includes one call overhead of the runtime (tens of µs),
which a whole model pays once, not once per layer. The ILP then bounds ``sum_l latency_l(b_l)``.

Measurements are cached in a JSON file (default ``~/.cache/dyadiq/latency.json``) keyed by what the
time depends on: the layer's op, input and weight shapes and attributes, bias, ``b``, ``act_bits``,
per-channel, the target, this machine's CPU (model name and core count) and a hash of the code generator
and target sources (a kernel rewrite invalidates old numbers). Layers of one shape are measured once.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import InputError
from .ir.graph import Graph, Node
from .ir.serialize import atomic_write

FORMAT = "dyadiq.latency_table"
VERSION = 1
Progress = Callable[[str, int, int], None]
Table = dict[str, dict[int, float]]           # layer -> bits -> ms


def default_path() -> Path:
    """``$XDG_CACHE_HOME/dyadiq/latency.json`` (default ``~/.cache/dyadiq/latency.json``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dyadiq" / "latency.json"


def machine() -> str:
    """This machine's CPU as the cache sees it: model name, logical cores, architecture."""
    name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{name or 'unknown cpu'} x{os.cpu_count()} {platform.machine()}"


def code_hash(target: str) -> str:
    """sha256 (12 hex digits) of the sources that decide the generated code: every module of
    ``dyadiq.codegen``, the integer lowering and the target's module."""
    files = sorted(Path(find_spec("dyadiq.codegen").origin).parent.rglob("*.py"))
    from .targets import BACKENDS
    for mod in ["dyadiq.passes.integerize"] + ([BACKENDS[target].partition(":")[0]] if target in BACKENDS else []):
        spec = find_spec(mod)
        if spec is not None and spec.origin:
            files.append(Path(spec.origin))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def layer_key(g: Graph, n: Node, bits: int, *, act_bits: int, per_channel: bool, target: str, code: str) -> str:
    """The cache key of layer ``n`` of ``g`` at ``bits`` (a JSON string of everything the time depends on)."""
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(n.attr_dict.items())}
    return json.dumps({"op": n.op, "x": list(g.type_of(n.inputs[0]).shape), "w": list(g.type_of(n.inputs[1]).shape),
                       "bias": len(n.inputs) > 2, "attrs": attrs, "bits": int(bits), "act_bits": int(act_bits),
                       "per_channel": bool(per_channel), "target": target, "machine": machine(), "code": code},
                      sort_keys=True)


def single_layer(g: Graph, n: Node) -> Graph:
    """The float graph ``x -> n``: the layer alone with its weights and a zero bias (if it has one; the
    real bias over the scale of random inputs could overflow the int32 accumulator bound, and the time
    does not depend on its values)."""
    from .ir.builder import GraphBuilder
    b = GraphBuilder(f"layer_{n.name}")
    x = b.input("x", g.type_of(n.inputs[0]).shape, "f32")
    ins = [x, b.const("w", np.asarray(g.const(n.inputs[1]), np.float32))]
    if len(n.inputs) > 2:
        ins.append(b.const("bias", np.zeros(g.type_of(n.inputs[2]).shape, np.float32)))
    return b.build([b.op(n.op, ins, name="y", **n.attr_dict)])


def time_layer(g: Graph, n: Node, bits: int, *, act_bits: int = 8, per_channel: bool = True, target: str = "cpu",
               repeats: int = 20, warmup: int = 3, seed: int = 0) -> float:
    """Median milliseconds of layer ``n`` alone at ``bits`` on ``target`` (see the module docstring)."""
    from .passes.integerize import integerize
    from .passes.pipeline import FAST_OPTIONS, quantize
    from .targets import compile as build
    one = single_layer(g, n)
    rng = np.random.default_rng(seed)
    shape = one.type_of("x").shape
    calib = rng.normal(size=(2 * shape[0], *shape[1:])).astype(np.float32)
    q, _ = quantize(one, calib, weight_bits=int(bits), act_bits=int(act_bits), per_channel=per_channel,
                    bias_correct=False, **FAST_OPTIONS)             # timing only: the values do not matter
    art = build(integerize(q, raw=True), target)
    t = art.input_types[art.inputs[0]]
    info = np.iinfo(t.np_dtype)
    x = rng.integers(info.min, int(info.max) + 1, size=t.shape).astype(t.np_dtype)
    for _ in range(max(0, warmup)):
        art.run(x)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        art.run(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def load(path: str | os.PathLike) -> dict[str, dict]:
    """The cached entries of ``path`` (empty when it does not exist); InputError for a damaged file."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a latency table ({e}); delete it to measure again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise InputError(f"{p}: not a dyadiq latency table; delete it to measure again")
    if data.get("version") != VERSION:
        return {}
    return data["entries"]


def save(path: str | os.PathLike, entries: Mapping[str, dict]) -> None:
    """Write the cache atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, "version": VERSION, "entries": dict(entries)}, indent=1, sort_keys=True)
    atomic_write(p, text.encode())


def measure(g: Graph, candidates: Sequence[int], *, act_bits: int = 8, per_channel: bool = True,
            target: str = "cpu", cache: str | os.PathLike | None = None, repeats: int = 20, warmup: int = 3,
            progress: Progress | None = None) -> Table:
    """``layer -> bits -> ms`` for every conv2d/linear layer of ``g`` (names as in ``g``; pass the graph
    that ``choose_bits`` plans on, e.g. ``sensitivity.prepare_graph(g)``), from the cache where it has
    the entry, else measured (``time_layer``) and added to the cache file."""
    from .passes.quantize_weights import check_weight_bits, weighted_layers
    cands = sorted({check_weight_bits(b, " (candidate)") for b in candidates})
    path = Path(cache) if cache is not None else default_path()
    entries = dict(load(path))
    code = code_hash(target)
    jobs = [(n, b, layer_key(g, n, b, act_bits=act_bits, per_channel=per_channel, target=target, code=code))
            for n in weighted_layers(g) for b in cands]
    todo = list(dict.fromkeys(k for _, _, k in jobs if k not in entries))
    first = {k: (n, b) for n, b, k in reversed(jobs)}
    for i, k in enumerate(todo):
        if progress:
            progress("latency table", i, len(todo))
        n, b = first[k]
        entries[k] = {"ms": time_layer(g, n, b, act_bits=act_bits, per_channel=per_channel, target=target,
                                       repeats=repeats, warmup=warmup),
                      "repeats": int(repeats), "layer": n.name,
                      "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        save(path, entries)                     # keep what was measured if a later layer fails
    if progress:
        progress("latency table", len(todo), len(todo))
    table: Table = {}
    for n, b, k in jobs:
        table.setdefault(n.name, {})[b] = float(entries[k]["ms"])
    return table
