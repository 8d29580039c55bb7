"""Worker extension loaded into every vLLM worker (``worker_extension_cls``): in-place weight updates.

An update is three kinds of collective RPC: ``distil_begin_update(version)``, any number of
``distil_load_chunk(version, names, packed)`` (tensors as bytes through vLLM's RPC) or
``distil_load_file(version, path)`` (a safetensors file in shared memory on the same host,
read without further copies), and ``distil_finish_update(version)``.
It follows vLLM's own in-place reload (``model_loader.reload``): layers are put back in
checkpoint format, loaded chunk by chunk in Hugging Face names, and re-processed into
the kernels' layout once complete. That re-processing matters on CPU, where linear
weights are pre-packed for oneDNN and a plain ``param.copy_`` would be silently ignored.

Only bytes, strings and ints cross the RPC, so no insecure (pickle) serialization is needed.
"""

from __future__ import annotations

import torch


def pack_tensor(t: torch.Tensor) -> tuple[str, list[int], bytes]:
    """A CPU tensor as (dtype name, shape, bytes): plain types that every RPC layer can carry."""
    t = t.detach().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    return str(t.dtype).removeprefix("torch."), list(t.shape), raw


def unpack_tensor(dtype: str, shape: list[int], raw: bytes) -> torch.Tensor:
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return flat.view(getattr(torch, dtype)).reshape(shape)


class WeightUpdateExtension:
    """Mixed into vLLM's worker class; methods are called by name through collective_rpc."""

    def _distil_model(self):
        return self.model_runner.get_model()

    def distil_begin_update(self, version: int) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import initialize_layerwise_reload

        self._distil_pending = int(version)
        self._distil_loaded: set[str] = set()
        with set_current_vllm_config(self.vllm_config), torch.no_grad():
            initialize_layerwise_reload(self._distil_model())

    def distil_load_chunk(
        self, version: int, names: list[str], packed: list[tuple[str, list[int], bytes]]
    ) -> int:
        """Load one chunk: ``packed[i]`` is (torch dtype name, shape, raw little-endian bytes)."""
        from vllm.config import set_current_vllm_config

        if getattr(self, "_distil_pending", None) != int(version):
            raise RuntimeError(
                f"weight chunk for version {version} arrived but the update in progress is "
                f"{getattr(self, '_distil_pending', None)}; call distil_begin_update first"
            )
        if len(names) != len(packed):
            raise ValueError(f"{len(names)} names but {len(packed)} tensors in a weight chunk")
        tensors = [unpack_tensor(*p) for p in packed]
        with set_current_vllm_config(self.vllm_config), torch.no_grad():
            loaded = self._distil_model().load_weights(list(zip(names, tensors, strict=True)))
        self._distil_loaded |= set(loaded or ())
        return len(names)

    def distil_load_file(self, version: int, path: str) -> int:
        """Load one chunk written by the engine process as a safetensors file (same host)."""
        from safetensors import safe_open
        from vllm.config import set_current_vllm_config

        if getattr(self, "_distil_pending", None) != int(version):
            raise RuntimeError(
                f"weight file for version {version} arrived but the update in progress is "
                f"{getattr(self, '_distil_pending', None)}; call distil_begin_update first"
            )
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
            tensors = [(n, f.get_tensor(n)) for n in names]
        with set_current_vllm_config(self.vllm_config), torch.no_grad():
            loaded = self._distil_model().load_weights(tensors)
        self._distil_loaded |= set(loaded or ())
        return len(names)

    def distil_finish_update(self, version: int) -> list[str]:
        """Finish loading; returns the model parameters that received no weights."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        if getattr(self, "_distil_pending", None) != int(version):
            raise RuntimeError(f"no update of version {version} in progress in this worker")
        model = self._distil_model()
        with set_current_vllm_config(self.vllm_config), torch.no_grad():
            finalize_layerwise_reload(model, self.vllm_config.model_config)
        runner = self.model_runner
        for reset in ("reset_lora_state", "reset_encoder_cache", "reset_mm_cache"):
            fn = getattr(runner, reset, None)
            if fn is not None:
                fn()
        expected = {name for name, _ in model.named_parameters()}
        missing = sorted(expected - self._distil_loaded)
        self._distil_pending = None
        return missing
