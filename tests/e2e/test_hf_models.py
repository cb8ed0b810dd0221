# SPDX-License-Identifier: Apache-2.0
"""Small randomly initialized Hugging Face ``transformers`` models fed ``input_ids`` and a padding
``attention_mask``, exported with ``torch.export`` and with ``torch.onnx`` (both its exporters), through the CLI: each mask (sdpa's
boolean one, eager attention's ``finfo.min`` bias, GPT-2's causal-and-padding mask) becomes a softmax keep
operand, RoBERTa's position ids (counted from the ids with ``cumsum``) stay integer code, and the compiled CPU
artifact equals the integer interpreter, close to transformers' float output on the real tokens."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_wrappers import LastHidden

from dyadiq import api, cli

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")

SEQ, VOCAB = 16, 500


def _model(family: str):
    t = transformers
    torch.manual_seed(0)
    small = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB)
    if family == "bert-eager":
        return t.BertModel(t.BertConfig(hidden_size=64, attn_implementation="eager", **small))
    if family == "roberta-eager":
        return t.RobertaModel(t.RobertaConfig(hidden_size=64, attn_implementation="eager", **small))
    if family == "distilbert-sdpa":
        return t.DistilBertModel(t.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=VOCAB))
    if family == "gpt2-sdpa":
        return t.GPT2Model(t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64,
                                        use_cache=False))
    raise ValueError(family)


def _feeds(rng, n: int, pad: int) -> dict[str, np.ndarray]:
    lengths = rng.integers(3, SEQ + 1, n)
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(3, VOCAB, (n, SEQ)) * mask + (1 - mask) * pad
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask}


@pytest.mark.parametrize("route", ["pt2", "onnx", "onnx-dynamo"])
@pytest.mark.parametrize("family", ["bert-eager", "roberta-eager", "distilbert-sdpa", "gpt2-sdpa"])
def test_small_hf_model_with_padding_compiles_bit_exact(family, route, tmp_path):
    model = LastHidden(_model(family)).eval()
    pad = model.m.config.pad_token_id or 0
    rng = np.random.default_rng(0)
    calib, feeds = _feeds(rng, 16, pad), _feeds(rng, 4, pad)
    args = tuple(torch.from_numpy(feeds[k][:2]) for k in ("input_ids", "attention_mask"))
    path = tmp_path / ("m.pt2" if route == "pt2" else "m.onnx")
    if route == "pt2":
        torch.export.save(torch.export.export(model, args), str(path))
    else:                                    # torch.onnx's TorchScript exporter, or its default (dynamo)
        torch.onnx.export(model, args, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["hidden"], **({"dynamo": False, "opset_version": 17}
                                                      if route == "onnx" else {}))
    np.savez(tmp_path / "calib.npz", **calib)
    np.savez(tmp_path / "eval.npz", **feeds)
    q, art = tmp_path / "q.dyq", tmp_path / "art"
    assert cli.main(["quantize", str(path), "-o", str(q), "--calib", str(tmp_path / "calib.npz"),
                     "--calib-method", "minmax", "--wide-acts", "0.3", "--rounding", "nearest"]) == 0
    softmaxes = [n for n in api.load(q).nodes if n.op == "softmax"]
    assert softmaxes and all(len(n.inputs) == 2 for n in softmaxes), "every attention mask is a keep operand"
    assert cli.main(["run", str(q), "-i", str(tmp_path / "eval.npz"), "--mode", "integer",
                     "-o", str(tmp_path / "int.npy")]) == 0
    assert cli.main(["compile", str(q), "--target", "cpu", "-o", str(art)]) == 0
    assert cli.main(["run", str(art), "-i", str(tmp_path / "eval.npz"), "-o", str(tmp_path / "art.npy")]) == 0
    got = np.load(tmp_path / "int.npy")
    assert np.array_equal(np.load(tmp_path / "art.npy"), got)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    real = feeds["attention_mask"].astype(bool)          # padded positions' outputs are not used
    r, x = ref[real], got[real]
    assert 10 * np.log10((r**2).sum() / ((r - x) ** 2).sum()) > 30.0      # measured 38.9-42.3 dB
