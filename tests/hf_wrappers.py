# SPDX-License-Identifier: Apache-2.0
"""A Hugging Face model as an exportable module: ``(input_ids, attention_mask) -> last_hidden_state``."""
import torch


class LastHidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class SentenceEmbedding(torch.nn.Module):
    """sentence-transformers' mean pooling over the real tokens, L2-normalized: ``-> [B, hidden]``."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).expand(h.size()).float()
        pooled = torch.sum(h * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)
