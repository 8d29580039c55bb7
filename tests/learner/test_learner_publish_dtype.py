"""Full weights travel in the receivers' dtype (a bf16 engine gets bf16 from the fp32
learner); a receiver that does not say gets the learner's tensors unchanged."""

from __future__ import annotations

import ray
import torch

from distil.engine.types import Probe
from services.learner.publish import RayObjectStoreTransport, WeightUpdate


@ray.remote
class Receiver:
    def __init__(self, dtype: str | None) -> None:
        self.dtype = dtype

    def weight_dtype(self):
        return self.dtype

    def update_weights(self, tensors, version, probe):
        return {k: str(v.dtype) for k, v in tensors.items()}


@ray.remote
class Silent:
    """An older receiver without weight_dtype."""

    def update_weights(self, tensors, version, probe):
        return {k: str(v.dtype) for k, v in tensors.items()}


def _update(target="student") -> WeightUpdate:
    tensors = {"w": torch.randn(4, 4), "steps": torch.arange(3)}
    return WeightUpdate(target, 1, tensors, Probe(token_ids=(1, 2), expected_logprobs=(0.0,)))


def test_weights_are_sent_in_the_receivers_dtype(ray_local):
    bf16, fp32, silent = Receiver.remote("bfloat16"), Receiver.remote("float32"), Silent.remote()
    transport = RayObjectStoreTransport({"student": [bf16, bf16], "teacher": [fp32]}, timeout_s=120)
    assert transport.send(_update("student")) == [{"w": "torch.bfloat16", "steps": "torch.int64"}] * 2
    assert transport.send(_update("teacher")) == [{"w": "torch.float32", "steps": "torch.int64"}]
    assert transport.receiver_dtype("student") == torch.bfloat16

    # no answer, or receivers that disagree: tensors go as the learner holds them
    assert RayObjectStoreTransport({"student": [silent]}, 120).send(_update()) == [
        {"w": "torch.float32", "steps": "torch.int64"}
    ]
    mixed = RayObjectStoreTransport({"student": [bf16, fp32]}, 120)
    assert mixed.receiver_dtype("student") is None
    assert mixed.send(_update())[0]["w"] == "torch.float32"
