"""Scored groups from the bus -> training samples, with the learner's own checks.

The wire schema already guarantees consistent shapes; here we check what only the
learner knows (the vocabulary) and values that would poison a step (NaN/inf). A group
that fails is rejected with a reason (the stage dead-letters it) and training goes on.
"""

from __future__ import annotations

import numpy as np

from distil.bus import Group
from services.learner.batching import TrainSample


class GroupRejected(ValueError):
    """A scored group the learner cannot train on; the message is the dead-letter reason."""


def _check_ids(ids: np.ndarray, vocab_size: int, where: str) -> None:
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise GroupRejected(
            f"{where} has token ids outside the vocabulary [0, {vocab_size}) "
            f"(min {int(ids.min())}, max {int(ids.max())}); rollout/teacher tokenizer differs from the learner's"
        )


def group_to_samples(
    group: Group, vocab_size: int, group_index: int
) -> tuple[list[TrainSample], list[float]]:
    """One ``TrainSample`` per response, and the rewards (for advantage-based objectives)."""
    if not group.responses:
        raise GroupRejected(f"group {group.group_id!r} has no responses")
    prompt = np.asarray(group.prompt_token_ids)
    if prompt.size == 0:
        raise GroupRejected(f"group {group.group_id!r} has an empty prompt")
    _check_ids(prompt, vocab_size, f"group {group.group_id!r} prompt")
    samples, rewards = [], []
    for i, r in enumerate(group.responses):
        where = f"group {group.group_id!r} response {i}"
        if r.token_ids.size == 0:
            raise GroupRejected(f"{where} is empty")
        _check_ids(r.token_ids, vocab_size, where)
        if not np.isfinite(r.logprobs).all():
            raise GroupRejected(f"{where} has NaN/inf rollout log-probs")
        top_ids = top_lp = None
        if r.teacher is not None:
            _check_ids(r.teacher.top_ids, vocab_size, f"{where} teacher top-K")
            if not np.isfinite(r.teacher.top_logprobs).all():
                raise GroupRejected(f"{where} has NaN/inf teacher log-probs")
            top_ids, top_lp = r.teacher.top_ids, r.teacher.top_logprobs
        samples.append(
            TrainSample(
                prompt_ids=prompt,
                response_ids=r.token_ids,
                rollout_logprobs=r.logprobs,
                teacher_topk_ids=top_ids,
                teacher_topk_logprobs=top_lp,
                teacher_mask=r.teacher is not None,
                group_id=group_index,
                rollout_temperature=group.sampling_temperature,
            )
        )
        rewards.append(float(r.feedback.reward) if r.feedback is not None else 0.0)
    ks = {s.teacher_topk_ids.shape[1] for s in samples if s.teacher_topk_ids is not None}
    if len(ks) > 1:
        raise GroupRejected(f"group {group.group_id!r} mixes teacher top-K sizes {sorted(ks)}")
    return samples, rewards
