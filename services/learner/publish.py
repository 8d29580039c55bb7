"""Weight publishing: after a step, the student's weights go to the rollout engines and the
EMA teacher's to the teacher engines, each with a version and a probe the receiver checks.
An update is full weights (``kind="full"``, receivers' ``update_weights``) or, for a LoRA
student, its adapter only (``kind="lora"``, receivers' ``update_adapter``).

The transport is pluggable (one ABC, one class per transport): the first moves tensors
through Ray's object store; an NCCL broadcast for large models can be added without
touching the step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from distil.engine.adapter import LoraAdapter
from distil.engine.types import Probe

Target = Literal["student", "teacher"]
UpdateKind = Literal["full", "lora"]


@dataclass
class WeightUpdate:
    target: Target
    version: int
    # full: Hugging Face parameter names, full (unsharded) tensors;
    # lora: the adapter's A/B matrices under PEFT's saved names (distil.engine.adapter)
    tensors: dict[str, torch.Tensor]
    probe: Probe
    kind: UpdateKind = "full"
    lora_config: dict[str, Any] | None = None  # kind "lora": PEFT's adapter_config.json contents

    def __post_init__(self) -> None:
        if (self.kind == "lora") != (self.lora_config is not None):
            raise ValueError("a LoRA weight update needs lora_config, and only a LoRA update has one")

    @classmethod
    def adapter(cls, target: Target, version: int, adapter: LoraAdapter, probe: Probe) -> WeightUpdate:
        return cls(target, version, dict(adapter.tensors), probe, kind="lora", lora_config=adapter.config)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def make_probe(
    model: torch.nn.Module, token_ids: Sequence[int], params: Mapping[str, torch.Tensor] | None = None
) -> Probe:
    """The model's per-token log-probs on ``token_ids`` at temperature 1 (with ``params``
    substituted for its parameters, e.g. the EMA teacher's), as a ``Probe``.

    With ``params`` holding every parameter and buffer, ``model`` may be a skeleton on the
    meta device (how a sharded model is probed: see ``probe_skeleton``)."""
    device = next(iter(params.values())).device if params else next(model.parameters()).device
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=device)
    with torch.no_grad():
        if params is None:
            logits = model(input_ids=ids).logits
        else:
            logits = torch.func.functional_call(
                model, dict(params), args=(), kwargs={"input_ids": ids}
            ).logits
        logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
    return Probe(token_ids=tuple(int(t) for t in token_ids), expected_logprobs=tuple(float(x) for x in logp))


def probe_skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """A parameterless copy (meta device) of a Hugging Face causal LM, to probe full tensors
    with ``make_probe``. Under FSDP2 the model's own forward is a collective every rank must
    join, so rank 0 cannot run it alone on the gathered weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model.config)


class WeightPublishError(RuntimeError):
    """A receiver refused or failed a weight update (e.g. its probe check failed)."""


class ReceiverUnavailable(WeightPublishError):
    """A receiver died before it confirmed the update (a replica being replaced): resend."""


class WeightTransport(ABC):
    """Delivers a ``WeightUpdate`` to every receiver of its target and waits for their results."""

    @abstractmethod
    def send(self, update: WeightUpdate) -> list[Any]:
        """Return one result per receiver; raise if any receiver failed (naming it)."""


class RayObjectStoreTransport(WeightTransport):
    """Puts the tensors in Ray's object store once; each receiver (a Ray actor or Serve
    handle with ``update_weights(tensors, version, probe)``, and for LoRA updates
    ``update_adapter(adapter, version, probe)`` taking a ``LoraAdapter``) reads them from there.

    Receivers get the tensors as a dict (Ray resolves the top-level object ref of an actor
    call); a receiver behind a Serve handle may get the ``ObjectRef`` itself and should
    ``ray.get`` it.

    Full weights travel in the dtype the receivers hold them in (asked once per target with
    ``weight_dtype()``; a receiver without that method gets the learner's dtype): a bf16
    engine gets bf16 from an fp32 learner, half the bytes, and casts nothing itself.
    """

    def __init__(self, receivers: Mapping[Target, Sequence[Any]], timeout_s: float = 600.0):
        self.receivers = {k: list(v) for k, v in receivers.items()}
        self.timeout_s = timeout_s
        self._dtypes: dict[Target, torch.dtype | None] = {}

    def receiver_dtype(self, target: Target) -> torch.dtype | None:
        """The float dtype ``target``'s receivers hold weights in; None when they do not say
        (or disagree), and then tensors go as the learner holds them."""
        if target not in self._dtypes:
            names = {_ask_dtype(h, self.timeout_s) for h in self.receivers.get(target, [])}
            name = names.pop() if len(names) == 1 else None
            self._dtypes[target] = getattr(torch, name) if name in _FLOAT_DTYPES else None
        return self._dtypes[target]

    def send(self, update: WeightUpdate) -> list[Any]:
        import ray

        handles = self.receivers.get(update.target, [])
        if not handles:
            return []
        tensors = {k: v.detach().cpu() for k, v in update.tensors.items()}
        dtype = self.receiver_dtype(update.target) if update.kind == "full" else None
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        if update.kind == "lora":
            assert update.lora_config is not None
            ref = ray.put(LoraAdapter(tensors=tensors, config=update.lora_config))
            calls = [h.update_adapter.remote(ref, update.version, update.probe) for h in handles]
        else:
            ref = ray.put(tensors)
            calls = [h.update_weights.remote(ref, update.version, update.probe) for h in handles]
        results = []
        for i, call in enumerate(calls):
            try:
                # Ray actor calls give ObjectRefs; Serve handle calls give DeploymentResponses.
                if hasattr(call, "result"):
                    results.append(call.result(timeout_s=self.timeout_s))
                else:
                    results.append(ray.get(call, timeout=self.timeout_s))
            except (ray.exceptions.GetTimeoutError, TimeoutError) as exc:
                raise TimeoutError(
                    f"{update.target} weights version {update.version}: receiver {i} of {len(handles)} did not "
                    f"confirm within {self.timeout_s:.0f}s"
                ) from exc
            except ray.exceptions.RayActorError as exc:  # the actor or Serve replica died
                raise ReceiverUnavailable(
                    f"{update.target} weights version {update.version}: receiver {i} of {len(handles)} died "
                    f"before confirming: {type(exc).__name__}: {exc}"
                ) from exc
            except Exception as exc:  # the receiver's own error, whatever Ray wrapped it in
                raise WeightPublishError(
                    f"{update.target} weights version {update.version}: receiver {i} of {len(handles)} failed: {exc}"
                ) from exc
        return results


_FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def _ask_dtype(handle: Any, timeout_s: float) -> str | None:
    """``handle.weight_dtype()`` (a Ray actor or a Serve handle), or None where it has none."""
    import ray

    try:
        call = handle.weight_dtype.remote()
        return (
            call.result(timeout_s=timeout_s) if hasattr(call, "result") else ray.get(call, timeout=timeout_s)
        )
    except Exception:  # no such method, or an older receiver: send as the learner holds them
        return None
