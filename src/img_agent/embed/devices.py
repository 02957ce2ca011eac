"""Which torch device encodes: ``auto`` resolved to CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

from img_agent.errors import ConfigError


def resolve_device(device: str = "auto") -> str:
    """Turn ``auto`` into ``cuda``, then ``mps``, then ``cpu``; check an explicit device exists.

    Raises:
        ConfigError: unknown device name, or CUDA / MPS asked for but not available.
    """
    import torch

    value = device.strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return value
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use --device cpu or auto")
        return value
    if value == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' asked for, but Apple MPS is not available; use --device cpu or auto")
        return value
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
