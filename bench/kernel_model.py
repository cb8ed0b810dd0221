# SPDX-License-Identifier: Apache-2.0
"""Model each fast dyadiq kernel of EfficientNet-Lite0 W8A8 with llvm-mca for a named CPU (no need to own it).

Every fast kernel (``codegen.x86.inventory.built_kernels``) is built alone for ``--mcpu`` (default
sapphirerapids; only compiled, never run, so any LLVM x86 CPU name works on any host). From its assembly
(``lib.inspect_source("asm")``) the hot inner loop is taken: the basic block with the most ``vpdpbusd``, or,
for kernels without it (depthwise, AVX2 gemm), the block with the most vector multiply instructions
(``MAC_PER_INSTR``). ``llvm-mca -mcpu=<mcpu> -iterations=200`` models that block alone as a loop:
``Block RThroughput`` (cycles per iteration if only port pressure limited it) and ``Total Cycles /
Iterations`` (with the block's dependency chains). MACs per iteration are counted from the multiply
instructions and their register width; the peak of the layer's main instruction (``peaks``) comes from
llvm-mca on a block of 16 independent instances of it (``vpmaddubsw``: the ``vpmaddubsw + vpmaddwd + vpaddd``
sequence that completes one u8 x s8 dot product on AVX2). llvm-mca models the core only (every load hits
L1): the depthwise and epilogue loops, which are memory-bound, look better here than they run.

    python bench/kernel_model.py [--mcpu sapphirerapids] [--graph w8.dyq] [--llvm-mca /usr/bin/llvm-mca]

Writes bench/results/kernel_model_<mcpu>.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_description, write_results  # noqa: E402

from dyadiq.codegen.x86.asm import basic_blocks, mnemonic  # noqa: E402

LLVM_MCA = "/usr/bin/llvm-mca"
ITERATIONS = 200
WIDTH = {"x": 128, "y": 256, "z": 512}
# multiply-accumulate products per instruction at 512 bits (halved per narrower width); vpmaddubsw: u8 x s8
# pairs into int16 (its vpmaddwd by ones that widens to int32 is counted as part of the pair, no MACs)
MAC_PER_INSTR = {"vpdpbusd": 64, "vpdpbusds": 64, "vpdpwssd": 32, "vpdpwssds": 32, "vpmaddwd": 32,
                 "vpmaddubsw": 64, "vpmulld": 16}
AMX_MACS = {"tdpbusd": 16 * 16 * 64, "tdpbssd": 16 * 16 * 64, "tdpbsud": 16 * 16 * 64, "tdpbuud": 16 * 16 * 64}


# ---- assembly -------------------------------------------------------------------------------------------
def mac_instructions(instrs: list[str]) -> Counter:
    """``(mnemonic, bits)`` -> count of the multiply instructions in ``instrs`` (width of the destination)."""
    c: Counter = Counter()
    for ins in instrs:
        mn = mnemonic(ins)
        if mn in MAC_PER_INSTR:
            regs = re.findall(r"%([xyz])mm\d+", ins)
            c[(mn, WIDTH[regs[-1]] if regs else 128)] += 1
        elif mn in AMX_MACS:
            c[(mn, 8192)] += 1
    return c


LANEWISE = ("vpdpwssd", "vpdpwssds", "vpmaddwd")


def macs(counts: Counter, lanewise: bool = False) -> int:
    """Useful MACs of one pass over instructions counted by ``mac_instructions``: each vpmaddubsw's pairs
    count, one vpmaddwd per vpmaddubsw of the same width is its widening step (no products). ``lanewise``
    (the depthwise kernels): the int16-pair instructions (``LANEWISE``) multiply one value per int32 lane by
    a zero-extended weight (``codegen/x86/depthwise.py``), one useful product per lane: half the count."""
    total = 0
    for (mn, bits), n in counts.items():
        if mn in AMX_MACS:
            total += n * AMX_MACS[mn]
            continue
        if mn == "vpmaddwd":
            n = max(0, n - counts.get(("vpmaddubsw", bits), 0))
        total += n * MAC_PER_INSTR[mn] * bits // 512 // (2 if lanewise and mn in LANEWISE else 1)
    return total


def hot_block(asm: str) -> tuple[str, list[str]]:
    """The innermost hot loop: the block with the most ``vpdpbusd``, else with the most multiply
    instructions (ties: the longer block)."""
    blocks = basic_blocks(asm)
    if not blocks:
        raise ValueError("no instructions in the assembly")

    def key(b):
        c = mac_instructions(b[1])
        return (sum(n for (mn, _), n in c.items() if mn.startswith("vpdpbusd") or mn in AMX_MACS),
                sum(c.values()), len(b[1]))
    return max(blocks, key=key)


# ---- llvm-mca -------------------------------------------------------------------------------------------
def llvm_mca(instrs: list[str], mcpu: str, exe: str = LLVM_MCA, iterations: int = ITERATIONS) -> dict:
    """llvm-mca's summary of ``instrs`` run as a loop on ``mcpu``: instructions, iterations, total cycles,
    block reciprocal throughput, and the scheduling model's resource names (which model LLVM used)."""
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as f:
        f.write("\n".join(instrs) + "\n")
    try:
        r = subprocess.run([exe, f"-mcpu={mcpu}", f"-iterations={iterations}", f.name],
                           capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(f.name)
    if r.returncode:
        raise RuntimeError(f"llvm-mca failed: {r.stderr.strip()[-500:]}")
    return parse_mca(r.stdout)


def parse_mca(text: str) -> dict:
    """``Iterations``, ``Instructions``, ``Total Cycles``, ``Block RThroughput`` of an llvm-mca report, plus
    ``cycles_per_iteration`` (total / iterations) and ``model``: the scheduling model LLVM used, from its
    resource names (``SKXPort0``: Skylake-server)."""
    def num(key):
        m = re.search(rf"^{key}:\s+([\d.]+)", text, re.M)
        if not m:
            raise ValueError(f"no {key!r} in the llvm-mca output")
        return float(m.group(1))
    it, ins, total, rt = (num(k) for k in ("Iterations", "Instructions", "Total Cycles", "Block RThroughput"))
    res = re.findall(r"^\[\d+(?:\.\d+)?\]\s+-\s+(\S+)", text, re.M)
    return {"iterations": int(it), "instructions": int(ins) // max(1, int(it)), "total_cycles": int(total),
            "block_rthroughput": rt, "cycles_per_iteration": total / it,
            "model": sched_model(res)}


SCHED_MODELS = {"SKX": "Skylake-server", "SKL": "Skylake", "ICX": "Ice Lake server", "ICL": "Ice Lake",
                "SPR": "Sapphire Rapids", "ADL": "Alder Lake", "Zn4": "Zen 4", "Zn3": "Zen 3", "Zn2": "Zen 2",
                "Zn": "Zen", "HW": "Haswell", "BW": "Broadwell"}


def sched_model(resources: list[str]) -> str:
    """``"Skylake-server (SKXPort0, ...)"`` from llvm-mca's resource names."""
    if not resources:
        return "?"
    port = next((r for r in resources if "Port" in r or "ALU" in r), resources[0])
    name = next((v for k, v in SCHED_MODELS.items() if port.startswith(k)), "?")
    return f"{name} ({port}, ...)"


def peak_block(mn: str, bits: int) -> tuple[list[str], int]:
    """16 independent instances of ``mn`` at ``bits`` (vpmaddubsw: its full dot-product sequence) and their
    MACs: the block whose modelled throughput is the instruction's peak."""
    r = {128: "xmm", 256: "ymm", 512: "zmm"}[bits]
    if mn == "vpmaddubsw":
        ins = []
        for i in range(5):
            t, a = 16 + i if bits == 512 else 6 + i, 11 + i
            ins += [f"vpmaddubsw %{r}1, %{r}0, %{r}{t}", f"vpmaddwd %{r}2, %{r}{t}, %{r}{t}",
                    f"vpaddd %{r}{t}, %{r}{a}, %{r}{a}"]
        return ins, 5 * MAC_PER_INSTR[mn] * bits // 512
    n = 16 if bits == 512 else 12
    first = 16 if bits == 512 else 2
    return [f"{mn} %{r}1, %{r}0, %{r}{first + i}" for i in range(n)], n * MAC_PER_INSTR[mn] * bits // 512


def peaks(keys, mcpu: str, exe: str = LLVM_MCA) -> dict:
    """``(mnemonic, bits)`` -> peak MAC/cycle on ``mcpu`` per llvm-mca (RThroughput of ``peak_block``)."""
    out = {}
    for mn, bits in keys:
        if mn in AMX_MACS:
            continue
        ins, m = peak_block(mn, bits)
        r = llvm_mca(ins, mcpu, exe)
        out[(mn, bits)] = m / r["block_rthroughput"]
    return out


def main_instruction(counts: Counter) -> tuple[str, int] | None:
    """The multiply instruction (mnemonic, bits) that contributes the most MACs."""
    best, most = None, -1
    for (mn, bits), n in counts.items():
        m = macs(Counter({(mn, bits): n}))
        if mn == "vpmaddwd" and counts.get(("vpmaddubsw", bits)):
            continue
        if m > most:
            best, most = (mn, bits), m
    return best


def model_kernel(lib, mcpu: str, exe: str = LLVM_MCA, lanewise: bool = False, rows_used: float = 1.0) -> dict:
    """The hot block of one built kernel and llvm-mca's model of it (``lanewise``: see ``macs``;
    ``rows_used``: the share of the four kernel rows per ``vpdpbusd`` lane a depthwise ``"rows"`` kernel
    uses, ``KH / (4 * ceil(KH / 4))``: its padded rows multiply zero weights)."""
    label, instrs = hot_block(lib.inspect_source("asm"))
    counts = mac_instructions(instrs)
    r = llvm_mca(instrs, mcpu, exe)
    m, main = macs(counts, lanewise), main_instruction(counts)
    if lanewise and main and main[0] == "vpdpbusd":
        m = int(m * rows_used)
    return {"block": label, "instructions": len(instrs), "mac_instructions": counts, "mac_per_iter": m,
            "main": main, "lanewise": lanewise, **r}


def describe(counts: Counter) -> str:
    return ", ".join(f"{n} {mn} {'xyz'[bits // 256] if bits <= 512 else 'tile'}mm"
                     for (mn, bits), n in sorted(counts.items(), key=lambda kv: -kv[1]))


# ---- driver ---------------------------------------------------------------------------------------------
def effnet_w8(path: Path | None):
    """EfficientNet-Lite0 W8A8 per-channel (``cpu_latency.build_models``' settings), from ``path`` if given."""
    from dyadiq.ir.serialize import load
    if path is not None and path.is_file():
        return load(path)
    from cpu_latency import quantized_graphs
    with tempfile.TemporaryDirectory() as d:
        quantized_graphs(Path(d), ("w8",))
        ig = load(Path(d) / "w8.dyq")
    return ig


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mcpu", default="sapphirerapids", help="LLVM CPU to build for and to model")
    ap.add_argument("--graph", type=Path, help="an integer graph (.dyq) to use instead of quantizing EfficientNet")
    ap.add_argument("--llvm-mca", default=LLVM_MCA)
    ap.add_argument("--limit", type=int, default=0, help="model only the first N kernels (0: all)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    from cpu_latency import layer_shape

    from dyadiq.codegen.x86.inventory import built_kernels
    from dyadiq.codegen.x86.lower import select_isa
    from dyadiq.targets.cpu import make_target
    target = make_target(args.mcpu)
    ig = effnet_w8(args.graph)
    kernels = built_kernels(ig, target)
    if args.limit:
        kernels = dict(list(kernels.items())[:args.limit])
    rows, models = [], {}
    for name, (label, ch, lib, _shapes) in kernels.items():
        kh = int(ig.type_of(ch.conv.inputs[1]).shape[2]) if ch is not None and ch.conv.op == "qconv2d" else 1
        rows_used = kh / (4 * -(-kh // 4))
        models[name] = (label, ch, model_kernel(lib, args.mcpu, args.llvm_mca, label.startswith("depthwise"),
                                                rows_used))
    pk = peaks(sorted({m["main"] for _, _, m in models.values() if m["main"]}), args.mcpu, args.llvm_mca)
    for name, (label, ch, m) in models.items():
        shape, mmac = layer_shape(ig, ch)
        peak = pk.get(m["main"])
        if peak and m["lanewise"] and m["main"][0] in LANEWISE:
            peak /= 2                                     # one useful product per int32 lane
        rt, cpi = m["block_rthroughput"], m["cycles_per_iteration"]
        rows.append({"layer": name, "kernel": label + (" +add" if ch is not None and ch.add else ""), "shape": shape, "MMAC": mmac,
                     "block": m["block"], "instr/iter": m["instructions"],
                     "multiplies/iter": describe(m["mac_instructions"]), "MAC/iter": m["mac_per_iter"],
                     "RThroughput cyc/iter": rt, "total/iter cyc": round(cpi, 2),
                     "MAC/cyc (RThroughput)": m["mac_per_iter"] / rt if rt else 0.0,
                     "MAC/cyc (total)": m["mac_per_iter"] / cpi if cpi else 0.0,
                     "peak MAC/cyc": peak or "",
                     "of peak (RThroughput)": (m["mac_per_iter"] / rt / peak) if peak and rt else "",
                     "of peak (total)": (m["mac_per_iter"] / cpi / peak) if peak and cpi else "",
                     "hot-loop kcycles": 1e3 * mmac * cpi / m["mac_per_iter"] if m["mac_per_iter"] else ""})
        print(rows[-1], flush=True)
    summary: dict = {}
    for r in rows:
        if isinstance(r["hot-loop kcycles"], float):
            a = summary.setdefault(r["kernel"], [0, 0.0, 0.0])
            a[0], a[1], a[2] = a[0] + 1, a[1] + r["MMAC"], a[2] + r["hot-loop kcycles"]
    ver = subprocess.run([args.llvm_mca, "--version"], capture_output=True, text=True).stdout
    ver = next((ln.strip() for ln in ver.splitlines() if "version" in ln.lower()), "?")
    sched = sorted({m["model"] for _, _, m in models.values()})
    cpu = cpu_description()
    meta = {"what": "the hot inner loop of each fast dyadiq kernel of EfficientNet-Lite0 W8A8, modelled by "
                    "llvm-mca (core only: every load hits L1)",
            "mcpu": args.mcpu, "kernels (select_isa)": select_isa(target), "target": str(target),
            "llvm-mca": f"{args.llvm_mca} ({ver}), -iterations={ITERATIONS}; LLVM scheduling model for "
                        f"{args.mcpu}: {'; '.join(sched)}",
            "hot block": "the basic block with the most vpdpbusd, else the most vector multiplies "
                         "(vpmaddwd, vpmulld, vpdpwssd, vpmaddubsw)",
            "MACs counted": "per instruction at zmm/ymm/xmm: vpdpbusd 64/32/16, vpdpwssd 32/16/8, "
                            "vpmaddwd 32/16/8, vpmaddubsw 64/32/16 (with one vpmaddwd per vpmaddubsw as its "
                            "widening step, no MACs), vpmulld 16/8/4; depthwise kernels use vpdpwssd/vpmaddwd "
                            "lanewise (one int32 activation per lane times a zero-extended int16 weight: 16/8 "
                            "useful MACs per zmm/ymm), so their MACs and peaks are halved; the depthwise "
                            "\"rows\" kernel's vpdpbusd counts KH / (4 ceil(KH / 4)) of its 64 MACs (rows past "
                            "KH multiply zero weights)",
            "peaks (MAC/cycle = MACs / Block RThroughput of 16 (ymm/xmm: 12) independent instances; vpmaddubsw: "
            "5 vpmaddubsw+vpmaddwd+vpaddd sequences)": "; ".join(f"{mn} {'xyz'[b // 256]}mm {v:.1f}" for (mn, b), v in sorted(pk.items())),
            "per kernel class (layers, MMAC, hot-loop kcycles, MAC/cycle)": "; ".join(
                f"{k}: {n}, {a:.1f}, {c:.0f}, {1e3 * a / c:.1f}" for k, (n, a, c) in sorted(summary.items())),
            "hot-loop kcycles": "MACs / (MAC per iteration / total cycles per iteration): the layer's time if "
                                "all its MACs ran in the modelled hot loop (no epilogue, padding or cache misses)",
            "host (not used by the model)": cpu["model"], "command": "python bench/kernel_model.py " + " ".join(
                argv if argv is not None else sys.argv[1:])}
    cols = ["layer", "kernel", "shape", "MMAC", "instr/iter", "multiplies/iter", "MAC/iter",
            "RThroughput cyc/iter", "total/iter cyc", "MAC/cyc (RThroughput)", "MAC/cyc (total)", "peak MAC/cyc",
            "of peak (RThroughput)", "of peak (total)", "hot-loop kcycles"]
    print(write_results(f"kernel_model_{args.mcpu}", rows, cols, meta, args.out))


if __name__ == "__main__":
    main()
