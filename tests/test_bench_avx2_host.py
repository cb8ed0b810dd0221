# SPDX-License-Identifier: Apache-2.0
"""bench/avx2_host.c (``cpu_latency.py --emulate-avx2``): a process under it sees an AVX2-only CPU through
CPUID, keeps working with libraries that install their own SIGSEGV handler, and still dies of a real fault."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dyadiq.targets.cpu import host_cpu_flags

SHIM = Path(__file__).parents[1] / "bench" / "avx2_host.c"

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the shim"),
    pytest.mark.skipif("cpuid_fault" not in (host_cpu_flags() or set()),
                       reason="this CPU or kernel has no CPUID faulting (cpuid_fault), which the shim needs"),
]

CPUID_PROBE = r"""
#include <cpuid.h>
#include <stdio.h>
int main(void) {
    unsigned a, b, c, d, a1, b1, c1, d1;
    __cpuid_count(7, 0, a, b, c, d);
    __cpuid_count(7, 1, a1, b1, c1, d1);
    printf("avx2=%u avx512f=%u avx512bw=%u avx512vnni=%u avx512vbmi=%u amx_int8=%u avx_vnni=%u\n",
           (b >> 5) & 1, (b >> 16) & 1, (b >> 30) & 1, (c >> 11) & 1, (c >> 1) & 1, (d >> 25) & 1, (a1 >> 4) & 1);
    return 0;
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("avx2_host")
    so, probe = d / "avx2_host.so", d / "probe"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(SHIM), "-ldl"], check=True)
    (d / "probe.c").write_text(CPUID_PROBE)
    subprocess.run(["gcc", "-O2", "-o", str(probe), str(d / "probe.c")], check=True)
    return {"env": dict(os.environ, LD_PRELOAD=str(so)), "probe": str(probe)}


def _features(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in (kv.split("=") for kv in out.split())}


def test_cpuid_shows_avx2_and_nothing_wider(shim):
    plain = _features(subprocess.run([shim["probe"]], capture_output=True, text=True, check=True).stdout)
    masked = _features(subprocess.run([shim["probe"]], capture_output=True, text=True, check=True,
                                      env=shim["env"]).stdout)
    assert masked["avx2"] == plain["avx2"]
    assert {k: v for k, v in masked.items() if k != "avx2"} == dict.fromkeys(masked.keys() - {"avx2"}, 0)


def test_tvm_installs_its_segv_handler_and_numpy_sees_no_avx512(shim):
    code = ("import tvm, numpy\nfrom numpy._core._multiarray_umath import __cpu_features__ as f\n"
            "print(f['AVX2'], f['AVX512F'], f['AVX512_ICL'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=shim["env"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]


def test_a_real_segfault_still_kills_the_process(shim):
    out = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], capture_output=True,
                         env=shim["env"])
    assert out.returncode == -signal.SIGSEGV
