"""The student as the learner runs it: a causal LM whose forward returns log-probs at the
sampled tokens and the teacher's top-K ids, gathered chunk-wise from the last hidden states
of the response positions only (never a full ``[L,V]`` logits tensor)."""

from __future__ import annotations

import torch

from distil.hardware import learner_dtype, torch_dtype
from distil.losses import StudentLogprobs, chunked_student_logprobs
from services.learner.config import TrainConfig
from services.learner.distributed import Topology, shard_policy


class PolicyLogprobs(torch.nn.Module):
    def __init__(
        self,
        model: torch.nn.Module,
        chunk_size: int = 1024,
        autocast_dtype: torch.dtype | None = None,
        keep_logits_bytes: int = 0,
    ):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        # Micro-batches whose fp32 logits fit in this many bytes keep them for the backward
        # pass instead of recomputing the head (0 = always recompute).
        self.keep_logits_bytes = keep_logits_bytes
        # bf16 compute over fp32 master weights on a single GPU rank (FSDP2's mixed-precision
        # policy does the same across ranks); None = compute in the weights' dtype.
        self.autocast_dtype = autocast_dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        predict_positions: torch.Tensor,
        token_ids: torch.Tensor,
        topk_ids: torch.Tensor | None,
        temperature: torch.Tensor | None = None,
    ) -> StudentLogprobs:
        dtype = self.autocast_dtype
        with torch.autocast(input_ids.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            hidden = self.model.get_decoder()(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            index = predict_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            head = self.model.get_output_embeddings()
            logits_bytes = 4 * index.shape[0] * index.shape[1] * head.weight.shape[0]
            return chunked_student_logprobs(
                hidden.gather(1, index),
                head.weight,
                token_ids,
                topk_ids,
                chunk_size=self.chunk_size,
                lm_head_bias=getattr(head, "bias", None),
                temperature=temperature,
                recompute=logits_bytes > self.keep_logits_bytes,
            )


def training_policy(model: torch.nn.Module, train: TrainConfig, topo: Topology) -> PolicyLogprobs:
    """The policy a rank trains, from a model already on the rank's device: activation
    checkpointing if configured, training mode, then FSDP2 across several ranks, or autocast
    over the fp32 weights on a single rank, in ``train.dtype`` resolved for the device
    (``distil.hardware.learner_dtype``: bf16 on a GPU with bf16, fp32 on CPU by default)."""
    if train.activation_checkpointing:
        # Non-reentrant: works with FSDP2 and with LoRA's frozen base (inputs need no grad).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()  # HF loads in eval mode; checkpointing (and any dropout) apply in training mode
    policy = PolicyLogprobs(
        model, chunk_size=train.logits_chunk, keep_logits_bytes=train.logits_keep_mb * 2**20
    )
    device = next(model.parameters()).device.type
    compute = torch_dtype(learner_dtype(train.dtype, "cuda" if device == "cuda" else "cpu"))
    if topo.distributed:
        shard_policy(policy, param_dtype=compute)
    elif compute != torch.float32:
        policy.autocast_dtype = compute
    return policy
