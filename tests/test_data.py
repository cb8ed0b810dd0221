# SPDX-License-Identifier: Apache-2.0
"""Calibration data files: .npy, .npz, folders of images with a named preprocessing; errors name the file."""
import numpy as np
import pytest

from dyadiq.data import IMAGENET_MEAN, IMAGENET_STD, PREPROCESS, load_calib
from dyadiq.errors import InputError
from dyadiq.ir.builder import GraphBuilder


def image_graph(size=32, batch=1):
    b = GraphBuilder()
    x = b.input("image", (batch, 3, size, size))
    return b.build([b.op("relu", [x], "y")])


def two_input_graph():
    b = GraphBuilder()
    x, m = b.input("x", (1, 4)), b.input("mask", (1, 4))
    return b.build([b.op("mul", [x, m], "y")])


def save_png(path, img):
    from skimage import io
    io.imsave(str(path), img, check_contrast=False)


def test_npy_is_samples_on_the_first_axis(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    assert np.array_equal(load_calib(tmp_path / "c.npy", image_graph()), x)


def test_npz_has_one_array_per_input(tmp_path):
    g = two_input_graph()
    np.savez(tmp_path / "c.npz", x=np.ones((3, 4), np.float32), mask=np.zeros((3, 4), np.float32))
    got = load_calib(tmp_path / "c.npz", g)
    assert set(got) == {"x", "mask"} and got["x"].shape == (3, 4)
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 4), np.float32))
    with pytest.raises(InputError, match=r"bad.npz: needs one array per graph input \(x, mask\); missing \['mask'\]"):
        load_calib(tmp_path / "bad.npz", g)
    np.savez(tmp_path / "one.npz", anything=np.ones((2, 3, 32, 32), np.float32))
    assert set(load_calib(tmp_path / "one.npz", image_graph())) == {"image"}   # one input: any name


def test_image_folder_with_preprocessing(tmp_path):
    rng = np.random.default_rng(0)
    save_png(tmp_path / "b.png", rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8))
    save_png(tmp_path / "a.png", np.full((30, 30), 200, np.uint8))                 # gray
    save_png(tmp_path / "c.png", rng.integers(0, 256, size=(33, 35, 4), dtype=np.uint8))   # RGBA
    (tmp_path / "notes.txt").write_text("not an image")
    for name in PREPROCESS:
        x = load_calib(tmp_path, image_graph(32), preprocess=name)
        assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    x = load_calib(tmp_path, image_graph(32), preprocess="imagenet")
    want = (200 / 255 - IMAGENET_MEAN) / IMAGENET_STD                              # a.png sorts first
    assert np.allclose(x[0].mean(axis=(1, 2)), want, atol=1e-5)
    lite = load_calib(tmp_path, image_graph(32), preprocess="lite")
    assert np.allclose(lite[0], (200 - 127) / 128, atol=1e-5)


@pytest.mark.parametrize("setup, kw, match", [
    (lambda p: None, {}, "calibration data not found"),
    (lambda p: p.mkdir(), {"preprocess": "lite"}, r"no images \(.png .jpg .jpeg .bmp\)"),
    (lambda p: (p.mkdir(), save_png(p / "a.png", np.zeros((8, 8, 3), np.uint8))), {},
     "needs a preprocessing \\(one of: lite, imagenet\\)"),
    (lambda p: (p.mkdir(), save_png(p / "a.png", np.zeros((8, 8, 3), np.uint8))), {"preprocess": "vgg"},
     "unknown preprocessing 'vgg'"),
    (lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"\x89PNG broken")), {"preprocess": "lite"},
     r"a.png: cannot read image"),
])
def test_bad_image_folders_are_input_errors(tmp_path, setup, kw, match):
    p = tmp_path / "data"
    setup(p)
    with pytest.raises(InputError, match=match):
        load_calib(p, image_graph(), **kw)


def test_bad_arrays_are_input_errors(tmp_path):
    g = image_graph()
    np.save(tmp_path / "shape.npy", np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match=r"expected samples of shape \[N, 3, 32, 32\] \(f32\), got \[4, 3, 16, 16\]"):
        load_calib(tmp_path / "shape.npy", g)
    np.save(tmp_path / "pixels.npy", np.zeros((4, 3, 32, 32), np.uint8))
    with pytest.raises(InputError, match="expected f32 samples .* got uint8"):
        load_calib(tmp_path / "pixels.npy", g)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy: holds pickled Python objects, which dyadiq never loads"):
        load_calib(tmp_path / "obj.npy", g)
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="trunc.npz: not a valid .npz file"):
        load_calib(tmp_path / "trunc.npz", g)
    (tmp_path / "c.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"unknown calibration data type '.csv'"):
        load_calib(tmp_path / "c.csv", g)
    np.save(tmp_path / "ok.npy", np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="applies to image folders only"):
        load_calib(tmp_path / "ok.npy", g, preprocess="lite")
