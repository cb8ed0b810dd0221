# SPDX-License-Identifier: Apache-2.0
"""Tests of the model zoo: EfficientNet-Lite0, digits CNN, photo data, test blocks."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dyadiq import zoo  # noqa: E402
from dyadiq.zoo.blocks import BLOCKS  # noqa: E402

CAT = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP = {504, 967, 968}  # coffee mug, espresso, cup
LITE0_PARAMS = 4_652_008
INPUT_SHAPES = {
    "residual_block": (1, 16, 16, 16),
    "mbv2_block": (1, 16, 16, 16),
    "mlp": (1, 64),
    "transformer_layer": (1, 8, 32),
    "pool_concat_cnn": (1, 3, 16, 16),
}


def test_import_is_light():
    code = "import sys, dyadiq.zoo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def lite0():
    return zoo.efficientnet_lite0()


@pytest.mark.slow
def test_efficientnet_lite0_classifies_photos(lite0):
    photos = zoo.real_photos()
    x = torch.from_numpy(np.stack([photos["chelsea"], photos["coffee"]]))
    with torch.no_grad():
        pred = lite0(x).argmax(1).tolist()
    assert pred[0] in CAT
    assert pred[1] in CUP


@pytest.mark.slow
def test_efficientnet_lite0_params_and_shape(lite0):
    assert sum(p.numel() for p in lite0.parameters()) == LITE0_PARAMS
    assert not lite0.training
    with torch.no_grad():
        assert lite0(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


def test_efficientnet_lite0_untrained_is_deterministic():
    a = zoo.efficientnet_lite0(pretrained=False).state_dict()
    b = zoo.efficientnet_lite0(pretrained=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_preprocess_lite():
    img = np.full((300, 451, 3), 127, np.uint8)
    x = zoo.preprocess_lite(img, size=64)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x, 0.0, atol=1e-6)
    assert zoo.preprocess_lite(np.zeros((40, 50), np.uint8), size=32).shape == (3, 32, 32)


def test_digits_cnn_accuracy():
    data = zoo.digits_data()
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert len(data.x_train) + len(data.x_test) == 1797
    model = zoo.digits_cnn()
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    assert (pred == data.y_test).mean() >= 0.95


def test_photo_crops_deterministic_and_split():
    a = zoo.photo_crops(8, size=64, seed=0, split="calib")
    b = zoo.photo_crops(8, size=64, seed=0, split="calib")
    c = zoo.photo_crops(8, size=64, seed=0, split="eval")
    assert a.shape == (8, 3, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, zoo.photo_crops(8, size=64, seed=1, split="calib"))
    assert np.abs(a).max() <= 1.0
    with pytest.raises(ValueError):
        zoo.photo_crops(1, split="train")


def test_real_photos():
    photos = zoo.real_photos(size=32)
    assert {"chelsea", "coffee", "astronaut"} <= set(photos)
    assert all(v.shape == (3, 32, 32) and v.dtype == np.float32 for v in photos.values())


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_runs(name):
    model, x = BLOCKS[name]()
    model2, x2 = BLOCKS[name]()
    assert tuple(x.shape) == INPUT_SHAPES[name]
    assert not model.training
    with torch.no_grad():
        y, y2 = model(x), model2(x2)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    assert torch.equal(x, model.example_input())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)
