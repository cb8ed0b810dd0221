# SPDX-License-Identifier: Apache-2.0
"""The cuda target: artifacts compile without a GPU (CUDA source, PTX and fatbin by nvcc); the same
scheduled TIR built for the CPU with serial thread loops is bit-exact with the integer interpreter, so
every kernel's arithmetic is checked here; on a GPU machine the CUDA run itself is bit-exact (skipped
elsewhere); without a GPU ``run`` refuses with one error line."""
import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import dyadiq
from dyadiq.passes.pipeline import FAST_OPTIONS
from dyadiq import targets
from dyadiq.errors import ArtifactError, InputError
from dyadiq.interp import run
from dyadiq.targets.cuda import gpu_status

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
NO_GPU = gpu_status()


def _check(ig, xs, arch="sm_80"):
    art = targets.compile(ig, target="cuda", arch=arch)
    assert art.manifest["arch"] == arch and art.manifest["kernels"]["kernels"] > 0
    assert "__global__" in art.source and f".target {arch}" in art.blobs["ptx"].decode()
    twin = art.cpu_twin()
    for x in xs:
        assert np.array_equal(twin(x), run(ig, x))
    if NO_GPU is None:
        for x in xs:
            assert np.array_equal(art.run(x), run(ig, x))
    return art


@pytest.fixture(scope="module")
def digits():
    from dyadiq.zoo import digits_cnn, digits_data
    d = digits_data()
    g = dyadiq.from_torch(digits_cnn(), (torch.from_numpy(d.x_test[:1]),))
    q, _ = dyadiq.quantize(g, d.x_train[:64], **FAST_OPTIONS)
    return dyadiq.integerize(q), d


def test_digits_cnn_kernels_are_bit_exact(digits):
    ig, d = digits
    _check(ig, [d.x_test[i:i + 1] for i in range(8)], arch="sm_90")


@pytest.mark.parametrize("name,bits", [("residual_block", 8), ("mbv2_block", 4), ("mlp", 8), ("pool_concat_cnn", 8)])
def test_zoo_block_kernels_are_bit_exact(name, bits):
    from dyadiq.zoo import BLOCKS
    model, x = BLOCKS[name]()
    g = dyadiq.from_torch(model, (x,))
    data = np.random.default_rng(1).normal(size=(36,) + tuple(x.shape[1:])).astype(np.float32)
    q, _ = dyadiq.quantize(g, data[:32], weight_bits=bits, **FAST_OPTIONS)
    ig = dyadiq.integerize(q)
    art = _check(ig, [data[i:i + 1] * s for i in range(32, 36) for s in (1, 4)])
    if name == "mbv2_block":     # the requantize epilogue is fused into the conv kernels; depthwise has its own
        names = art.manifest["kernels"]
        assert names["kernels"] >= 3
        assert any("conv2d" in k and "right_shift" in k for k in art.source.split("__global__")[1:])


def test_save_and_refusal_without_a_gpu(digits, tmp_path):
    ig, d = digits
    art = targets.compile(ig, target="cuda")
    path = art.save(tmp_path / "digits-cuda")
    assert {p.name for p in path.iterdir()} == {"model.cu", "model.ptx", "model.fatbin", "model.so", "graph.dyq",
                                                 "README.md", "manifest.json"}
    from dyadiq.codegen import (
        cuda as cg,  # a rebuild (what a GPU machine loads) is the same code
    )
    t = cg.cuda_target(art.manifest["arch"])
    rebuilt = cg.cuda_source(cg.build(cg.schedule(ig, t), t))
    assert hashlib.sha256(rebuilt.encode()).hexdigest() == art.manifest["cuda_source_sha256"]
    if NO_GPU is None:
        y = dyadiq.load_artifact(path).run(d.x_test[:1])
        assert np.array_equal(y, run(ig, d.x_test[:1]))
        return
    with pytest.raises(ArtifactError, match="runs only on an NVIDIA GPU"):
        dyadiq.load_artifact(path)
    np.save(tmp_path / "x.npy", d.x_test[:1])
    r = subprocess.run([sys.executable, "-m", "dyadiq.cli", "run", str(path), "--input", f"x={tmp_path / 'x.npy'}",
                        "-o", str(tmp_path / "y.npy")], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "NVIDIA GPU" in r.stderr
    assert not (tmp_path / "y.npy").exists()


def test_arch_is_checked(digits):
    with pytest.raises(InputError, match="sm_70"):
        targets.compile(digits[0], target="cuda", arch="sm_70")
    with pytest.raises(InputError, match="--mcpu"):
        targets.compile(digits[0], target="cuda", mcpu="x86-64")


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_efficientnet_lite0_kernels_are_bit_exact(bits, effnet_integer):
    ig, evalx = effnet_integer(bits)
    _check(ig, [evalx[i:i + 1] for i in range(2)])
