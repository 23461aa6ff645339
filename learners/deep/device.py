"""Pick the torch device for the deep model: CUDA when present, else CPU; overridable.

The override order is the explicit argument, then the ``STREAMREC_DEVICE`` environment variable, then
auto-detection, so a deployment can pin the device without code changes.

>>> resolve_device("cpu").type
'cpu'
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "STREAMREC_DEVICE"


def resolve_device(preference: str | torch.device | None = "auto") -> torch.device:
    """The device to train and serve on: "auto" (or None) means CUDA when available, else CPU."""
    if isinstance(preference, torch.device):
        return preference
    choice = (preference or "auto").strip().lower()
    if choice == "auto":
        choice = os.environ.get(DEVICE_ENV, "auto").strip().lower() or "auto"
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available here")
    if not (choice == "cpu" or choice.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {preference!r}")
    return torch.device(choice)
