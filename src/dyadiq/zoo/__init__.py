# SPDX-License-Identifier: Apache-2.0
"""Model zoo and deterministic data: EfficientNet-Lite0, a digits CNN, test blocks, photos.

Names resolve lazily (PEP 562): ``import dyadiq.zoo`` imports neither torch nor
the submodules; the first access to a name imports the submodule defining it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "efficientnet_lite": ("efficientnet_lite0", "EfficientNetLite0", "weights_path"),
    "photos": ("preprocess_lite", "photo_crops", "real_photos", "photo_names",
               "LITE_MEAN", "LITE_STD"),
    "digits": ("digits_data", "digits_cnn", "DigitsCNN", "Digits"),
    "blocks": ("residual_block", "mbv2_block", "mlp", "transformer_layer",
               "pool_concat_cnn", "BLOCKS"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:  # pragma: no cover
    from .blocks import (BLOCKS, mbv2_block, mlp, pool_concat_cnn, residual_block,
                         transformer_layer)
    from .digits import Digits, DigitsCNN, digits_cnn, digits_data
    from .efficientnet_lite import EfficientNetLite0, efficientnet_lite0, weights_path
    from .photos import (LITE_MEAN, LITE_STD, photo_crops, photo_names, preprocess_lite,
                         real_photos)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
