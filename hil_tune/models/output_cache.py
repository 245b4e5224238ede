"""A content-keyed cache of a deterministic block's per-sample outputs, for training a proxy.

Why: the grey-box's collaborative filter (BM3D's two stages) was nine tenths of a training step on
the synthetic ISP, yet once its two learnt noise scales are fixed it is a pure function of a
sample's mosaic and its noise-reduction knobs: the same numbers every epoch, for the training
samples and the held-out ones scored after each epoch. Computing it once per sample and reading it
back afterwards gives the same outputs, bit for bit, at a fraction of the cost.

Keys are digests of the inputs' bytes, not sample indices, so a cache can never hand one sample's
output to another (a reshuffled loader, another crop, another dataset); whatever the block depends
on must be part of the key. Entries stop being added at `max_bytes`; the cache never evicts, since
an epoch visits every sample once and an LRU would thrash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor


def digest(*parts: Tensor) -> bytes:
    """One key for the bytes, shapes and dtypes of these tensors (each a single sample's)."""
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        t = part.detach().cpu().contiguous()
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # the raw bytes, whatever the dtype
    return h.digest()


class OutputCache:
    """Per-sample outputs of one block, keyed by `digest` of what the block reads."""

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[bytes, Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    def batch(self, keys: list[bytes], compute: Callable[[int], Tensor]) -> Tensor:
        """The outputs for a batch whose sample i has key keys[i]: cached ones read back, the
        others computed by `compute(i)` (sample i alone, with a batch dimension of 1) and kept
        while the budget lasts.

        One sample at a time, so that an output never depends on which samples shared its batch:
        batched kernels may sum in another order for another batch size, and a resumed run, whose
        cache starts cold, must read the same numbers as an uninterrupted one."""
        rows = []
        for key in keys:
            row = self._store.get(key)
            if row is not None:
                self.hits += 1
                rows.append(row)
                continue
            self.misses += 1
            row = compute(len(rows))[0].detach()
            size = row.numel() * row.element_size()
            if self.bytes + size <= self.max_bytes:
                self._store[key] = row
                self.bytes += size
            rows.append(row)
        return torch.stack(rows)
