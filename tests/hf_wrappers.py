# SPDX-License-Identifier: Apache-2.0
"""A Hugging Face model as an exportable module: ``(input_ids, attention_mask) -> last_hidden_state``."""
import torch


class LastHidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
