# SPDX-License-Identifier: Apache-2.0
"""The backend seam: every target is a Backend in one table, with its own typed options; an option of another
target, an unknown option or a bad value is refused before anything is built; and no target module reaches
into another target's code generator."""
import re
from pathlib import Path

import pytest

from dyadiq.errors import CodegenError, InputError
from dyadiq.ir.builder import GraphBuilder
from dyadiq.targets import compile as build
from dyadiq.targets.backend import BACKENDS, Backend, Option, backend, check_supported, parse_options

TARGETS_DIR = Path(__file__).resolve().parents[2] / "src" / "dyadiq" / "targets"
OWN_CODEGEN = {"cpu": {"tvm", "x86", "cpu_schedule"}, "cuda": {"cuda", "tvm"}, "hls": {"hls"}, "tosa": {"tosa"}}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_implements_the_protocol(name):
    b = backend(name)
    assert isinstance(b, Backend) and b.name == name and b.help
    assert all(isinstance(o, Option) for o in b.options)
    assert len({o.name for o in b.options}) == len(b.options)


def test_options_are_checked_against_the_chosen_target():
    cpu = backend("cpu")
    assert parse_options(cpu, {"mcpu": None, "tune": 3})["tune"] == 3
    owners = [n for n in BACKENDS if n != "cpu" and backend(n).options]
    if owners:
        other = backend(owners[0]).options[0].name
        with pytest.raises(InputError, match=f"does not apply to target 'cpu' \\(it belongs to target .*{owners[0]}"):
            parse_options(cpu, {other: backend(owners[0]).options[0].default or 1})
    with pytest.raises(InputError, match="--kernels: 'fast' is not one of auto, generic"):
        parse_options(cpu, {"kernels": "fast"})
    with pytest.raises(InputError, match="--tune: bad value 'many'"):
        parse_options(cpu, {"tune": "many"})
    with pytest.raises(InputError, match="unknown target 'fpga9'"):
        backend("fpga9")


def test_an_op_a_backend_cannot_lower_is_refused_by_name_before_building():
    class Narrow:
        name, help, options = "narrow", "test", ()

        def unsupported(self, ig):
            return {n.op: "not in this test backend" for n in ig.nodes if n.op != "quantize"}

    b = GraphBuilder()
    x = b.input("x", (1, 4), "i8")
    g = b.build([b.op("lut", [x, b.const("t", __import__("numpy").arange(256, dtype="int8"))], in_min=-128)])
    with pytest.raises(CodegenError, match="target 'narrow' cannot lower 1 op\\(s\\) of this graph: lut: not in this"):
        check_supported(Narrow(), g)


def test_compile_refuses_an_option_of_another_target_before_integerizing():
    with pytest.raises(InputError, match="does not apply to target 'cpu'"):
        build(None, "cpu", reuse_factor=2)


@pytest.mark.parametrize("path", sorted(TARGETS_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_no_target_imports_another_targets_code_generator(path):
    used = set(re.findall(r"from \.\.codegen(?:\.| import )(\w+)", path.read_text()))
    assert used <= OWN_CODEGEN.get(path.stem, set()), f"{path.name} imports codegen {sorted(used)}"
