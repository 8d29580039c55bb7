"""The student as the learner runs it: a causal LM whose forward returns log-probs at the
sampled tokens and the teacher's top-K ids, gathered chunk-wise from the last hidden states
of the response positions only (never a full ``[L,V]`` logits tensor)."""

from __future__ import annotations

import torch

from distil.losses import StudentLogprobs, chunked_student_logprobs


class PolicyLogprobs(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        predict_positions: torch.Tensor,
        token_ids: torch.Tensor,
        topk_ids: torch.Tensor | None,
        temperature: torch.Tensor | None = None,
    ) -> StudentLogprobs:
        hidden = self.model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        index = predict_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        head = self.model.get_output_embeddings()
        return chunked_student_logprobs(
            hidden.gather(1, index),
            head.weight,
            token_ids,
            topk_ids,
            chunk_size=self.chunk_size,
            lm_head_bias=getattr(head, "bias", None),
            temperature=temperature,
        )
