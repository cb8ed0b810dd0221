# SPDX-License-Identifier: Apache-2.0
"""Reading the x86 assembly LLVM made of a kernel (AT&T syntax, ``lib.inspect_source("asm")``).

- ``basic_blocks(asm)``: ``(label, instructions)`` per basic block;
- ``hot_loop(asm)``: the block with the most multiply-accumulate instructions (the micro-kernel's reduction
  step, or the whole tile when LLVM unrolled a short reduction completely);
- ``stack_accesses(instrs)``: how many vector instructions read or write the stack: register spills and
  reloads (a kernel's accumulators live in registers).

``gemm.choose_tile`` uses them to turn down register tiles that spill; ``bench/kernel_model.py``
to find the loop it models.
"""
from __future__ import annotations

import re

JUMP = re.compile(r"j[a-z]+|ret[a-z]*")
BLOCK_LABEL = re.compile(r"(\.LBB\d+_\d+|[A-Za-z_][\w$.]*):")      # not .Ltmp (debug) or .LCPI (constants)
MAC_MNEMONICS = ("vpdpbusd", "vpdpbusds", "vpdpwssd", "vpdpwssds", "vpmaddwd", "vpmaddubsw", "vpmulld",
                 "tdpbusd", "tdpbssd", "tdpbsud", "tdpbuud")


def mnemonic(ins: str) -> str:
    """The mnemonic of an instruction line, past encoding prefixes such as ``{vex}`` (AVX-VNNI)."""
    return next((t for t in ins.split() if not t.startswith("{")), "")


def basic_blocks(asm: str) -> list[tuple[str, list[str]]]:
    """``(label, instructions)`` of each basic block of AT&T assembly: a block starts at a ``.LBB``/function
    label or after a jump; directives, debug labels and comments are dropped."""
    blocks: list[tuple[str, list[str]]] = []
    label, cur = "start", []

    def close(next_label: str):
        nonlocal label, cur
        if cur:
            blocks.append((label, cur))
        label, cur = next_label, []
    for raw in asm.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith(":"):
            if BLOCK_LABEL.fullmatch(line):
                close(line[:-1])
            continue
        if line.startswith("."):
            continue
        cur.append(line)
        if JUMP.fullmatch(mnemonic(line)):
            close(f"{label}+{len(blocks)}")
    close("")
    return blocks


def hot_loop(asm: str) -> list[str]:
    """The instructions of the block with the most multiply-accumulate instructions (``MAC_MNEMONICS``),
    ties to the longer block; empty when there is none."""
    best: tuple = (0, 0, [])
    for _, ins in basic_blocks(asm):
        key = (sum(mnemonic(i) in MAC_MNEMONICS for i in ins), len(ins), ins)
        if key[0] and key[:2] > best[:2]:
            best = key
    return best[2]


VECTOR_REG = re.compile(r"%[xyz]mm\d+")


def stack_accesses(instrs: list[str]) -> int:
    """Vector-register instructions with an ``(%rsp)`` operand: the kernel's spills and reloads of vector
    registers (the function's scalar bookkeeping also uses the stack, in the packed-call wrapper; frame
    pointers are omitted, so ``%rbp`` is an ordinary register)."""
    return sum(1 for i in instrs if "(%rsp)" in i and VECTOR_REG.search(i))
