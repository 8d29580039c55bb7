"""Student log-probs at the teacher's top-K ids, and the top-K(+tail) support.

``StudentLogprobs`` is what every objective consumes. It can be built from full logits
(``gather_student_logprobs``) or chunk by chunk from hidden states
(``chunked_student_logprobs``), so the learner never materialises a ``[T,V]`` fp32 logits
tensor for a long sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

# Smallest probability mass kept for a tail bucket: finite log, zero gradient below it.
TAIL_FLOOR = 1e-30


@dataclass
class StudentLogprobs:
    topk_logprobs: torch.Tensor | None  # [B,T,K] log p_theta at the teacher's ids (full-vocab normalised)
    token_logprobs: torch.Tensor  # [B,T] log p_theta(y_t)
    vocab_size: int
    entropy: torch.Tensor | None = None  # [B,T] detached, for metrics
    # [B,T] log p_theta(y_t) at the rollout's sampling temperature (log_softmax(z / tau)), when
    # that is not 1: what the rollout's log-probs are compared with. None = tau is 1.
    tempered_token_logprobs: torch.Tensor | None = None

    @property
    def sampling_token_logprobs(self) -> torch.Tensor:
        """log p_theta(y_t) under the distribution the rollout sampled from: the side of the
        importance ratio (and of GRPO's policy ratio) that the rollout's log-probs meet."""
        return self.token_logprobs if self.tempered_token_logprobs is None else self.tempered_token_logprobs


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (reference checks); everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _safe_ids(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    # Padding positions may carry any id (e.g. -100); they are masked later, gather must not fault.
    return ids.long().clamp(0, vocab_size - 1)


def _gather(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    topk_ids: torch.Tensor | None,
    temperature: torch.Tensor | None,
    entropy: bool = True,
):
    logits = logits.to(compute_dtype(logits.dtype))
    logp = torch.log_softmax(logits, dim=-1)
    V = logp.shape[-1]
    ids = _safe_ids(token_ids, V).unsqueeze(-1)
    token = logp.gather(-1, ids).squeeze(-1)
    topk = logp.gather(-1, _safe_ids(topk_ids, V)) if topk_ids is not None else None
    tempered = None
    if temperature is not None:
        tau = temperature.to(logits.dtype).view(-1, *([1] * (logits.dim() - 1)))
        tempered = torch.log_softmax(logits / tau, dim=-1).gather(-1, ids).squeeze(-1)
    ent = None
    if entropy:  # a metric: no gradient, and a full-vocabulary pass, so only when asked
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)
    return token, topk, ent, tempered


def _check_temperature(temperature: torch.Tensor | None, batch_size: int) -> None:
    if temperature is None:
        return
    if temperature.shape != (batch_size,) or not temperature.is_floating_point():
        raise ValueError(f"temperature must be a float tensor [{batch_size}], got {list(temperature.shape)}")
    if not (torch.isfinite(temperature).all() and (temperature > 0).all()):
        raise ValueError("temperature must be finite and > 0 (the rollout's sampling temperature per sample)")


def gather_student_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    topk_ids: torch.Tensor | None,
    temperature: torch.Tensor | None = None,
) -> StudentLogprobs:
    """Log-softmax the student's ``[B,T,V]`` logits and gather at the sampled and top-K ids.

    ``temperature`` ([B], the rollout's sampling temperature per sample) also gathers the
    sampled tokens' log-probs at that temperature (``tempered_token_logprobs``).
    """
    _check_temperature(temperature, logits.shape[0])
    token, topk, entropy, tempered = _gather(logits, token_ids, topk_ids, temperature)
    return StudentLogprobs(topk, token, logits.shape[-1], entropy, tempered)


def chunked_student_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    token_ids: torch.Tensor,
    topk_ids: torch.Tensor | None,
    *,
    chunk_size: int = 1024,
    lm_head_bias: torch.Tensor | None = None,
    temperature: torch.Tensor | None = None,
    recompute: bool = True,
) -> StudentLogprobs:
    """Same as ``gather_student_logprobs(hidden @ W.T)`` but over sequence chunks.

    With ``recompute`` each chunk's ``[B,chunk,V]`` logits are recomputed in the backward
    pass (activation checkpointing), so peak memory holds one chunk of logits instead of
    ``T``. Without it autograd keeps every chunk's logits: no second head matmul, for
    batches whose logits fit in memory anyway.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must have shape [B,T,H], got {list(hidden.shape)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    _check_temperature(temperature, hidden.shape[0])

    # The backward pass recomputes each chunk for its gradients only: the entropy metric
    # (no gradient, saved nothing) is computed on the forward pass and skipped then.
    recomputing = [False]

    def one_chunk(h: torch.Tensor, tok: torch.Tensor, top: torch.Tensor | None):
        logits = torch.nn.functional.linear(h, lm_head_weight, lm_head_bias)
        return _gather(logits, tok, top, temperature, entropy=not recomputing[0])

    tokens, tops, ents, temps = [], [], [], []
    for start in range(0, hidden.shape[1], chunk_size):
        sl = slice(start, start + chunk_size)
        top = topk_ids[:, sl] if topk_ids is not None else None
        if recompute and torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad):
            tok, tk, ent, tmp = checkpoint(
                one_chunk, hidden[:, sl], token_ids[:, sl], top, use_reentrant=False
            )
        else:
            tok, tk, ent, tmp = one_chunk(hidden[:, sl], token_ids[:, sl], top)
        tokens.append(tok)
        tops.append(tk)
        ents.append(ent)
        temps.append(tmp)
    recomputing[0] = True
    topk = torch.cat(tops, dim=1) if topk_ids is not None else None
    tempered = torch.cat(temps, dim=1) if temperature is not None else None
    return StudentLogprobs(
        topk, torch.cat(tokens, dim=1), lm_head_weight.shape[0], torch.cat(ents, dim=1), tempered
    )


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, floored at log(TAIL_FLOOR) (finite value, zero gradient there)."""
    return torch.log(torch.clamp(-torch.expm1(torch.clamp(x, max=0.0)), min=TAIL_FLOOR))


def support_logprobs(
    student_topk: torch.Tensor,
    teacher_topk: torch.Tensor,
    *,
    tail: bool,
    vocab_size: int,
    samples: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher log-probs over the K(+1) buckets, as proper distributions.

    With ``tail``: one extra bucket holding log(1 - sum_K p). When K equals the vocabulary
    the tail has no mass by definition and is left out. Without ``tail``: both are
    renormalised over the K ids. With ``samples`` the K entries are teacher samples
    (possibly repeated ids): both are returned as given, the student's over the full
    vocabulary, which is what the sample estimate of the cross-entropy needs.
    """
    dtype = student_topk.dtype
    teacher_topk = teacher_topk.to(dtype)
    if samples:
        return student_topk, teacher_topk
    K = student_topk.shape[-1]
    if tail and K < vocab_size:
        s_tail = log1mexp(torch.logsumexp(student_topk, dim=-1, keepdim=True))
        t_tail = log1mexp(torch.logsumexp(teacher_topk, dim=-1, keepdim=True))
        return torch.cat([student_topk, s_tail], dim=-1), torch.cat([teacher_topk, t_tail], dim=-1)
    return torch.log_softmax(student_topk, dim=-1), torch.log_softmax(teacher_topk, dim=-1)
