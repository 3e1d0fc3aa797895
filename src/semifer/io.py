"""Atomic file writes shared by every layer (checkpoints, decode caches, text embeddings, plots).

Processes write the same file at once: two benchmark runs building one decode cache, the ranks of
a DDP run caching one text embedding. Each writer therefore gets a temporary name of its own;
a name derived from the target alone (``x.json.tmp``) lets one writer rename another's
half-written file away, and the second rename then fails.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the extension of ``path`` (``best.tmp-1a2b3c4d.safetensors``), since
    writers such as ``cv2.imwrite`` and ``np.save`` choose the format from it. On an error the
    temporary file is removed and ``path`` is left as it was."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{uuid.uuid4().hex[:8]}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
