# SPDX-License-Identifier: Apache-2.0
"""all-MiniLM-L6-v2 as sentence-transformers runs it: a Hugging Face ``transformers`` BertModel (the real weights
of the installed package) over padded sentences with an attention mask, mean pooling over the real tokens
(``mask.float()``, a division by the token count) and L2 normalization, through the CLI alone with its default
options (the transformer preset), exported both ways: ``torch.export`` (sdpa with a boolean mask) and
``torch.onnx`` (``where(mask, 0, -inf)`` bias and an ``isnan`` guard). Both compile for the CPU with the artifact
equal to the integer interpreter bit for bit, and the embeddings stay close to the float model's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_wrappers import SentenceEmbedding

from dyadiq import cli

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")

SEQ = 24
CALIB = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
         "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
         "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums."]
EVAL = ["A cheetah is running behind its prey.", "The cat sat on the mat quietly.",
        "Stocks fell sharply on Monday after the report.", "I love this."]


def _feeds(texts):
    from dyadiq.zoo.minilm import tokenize
    ids = tokenize(texts, SEQ)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from dyadiq.zoo.minilm import package_dir
    d = tmp_path_factory.mktemp("hf_bert")
    model = SentenceEmbedding(transformers.BertModel.from_pretrained(str(package_dir()))).eval()
    ex = _feeds(EVAL[:2])
    args = tuple(torch.from_numpy(ex[k]) for k in ("input_ids", "attention_mask"))
    torch.export.save(torch.export.export(model, args), str(d / "bert.pt2"))
    torch.onnx.export(model, args, str(d / "bert.onnx"), input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"], dynamo=False, opset_version=17)
    np.savez(d / "calib.npz", **_feeds(CALIB))
    feeds = _feeds(EVAL)
    np.savez(d / "eval.npz", **feeds)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    return d, feeds, ref


@pytest.mark.parametrize("route", ["bert.pt2", "bert.onnx"])
def test_padded_bert_quantizes_and_compiles_bit_exact(exported, route, capsys):
    d, feeds, ref = exported
    q, art = d / f"{route}.dyq", d / f"{route}.art"
    assert cli.main(["inspect", str(d / route), "--check"]) == 0
    assert cli.main(["quantize", str(d / route), "-o", str(q), "--calib", str(d / "calib.npz")]) == 0
    assert "note: the model has attention" in capsys.readouterr().err
    assert cli.main(["run", str(q), "-i", str(d / "eval.npz"), "--mode", "integer", "-o",
                     str(d / "int.npy")]) == 0
    assert cli.main(["compile", str(q), "--target", "cpu", "-o", str(art)]) == 0
    assert cli.main(["run", str(art), "-i", str(d / "eval.npz"), "-o", str(d / "art.npy")]) == 0
    got, on_cpu = np.load(d / "int.npy"), np.load(d / "art.npy")
    assert np.array_equal(on_cpu, got)
    cos = (got * ref).sum(-1)                                   # both unit vectors
    assert cos.min() > 0.95, cos
