"""Atomic file writes shared by every layer (checkpoints, decode caches, text embeddings, plots).

Processes write the same file at once: two benchmark runs building one decode cache, the ranks of
a DDP run caching one text embedding. Each writer therefore gets a temporary name of its own;
a name derived from the target alone (``x.json.tmp``) lets one writer rename another's
half-written file away, and the second rename then fails.
"""
from __future__ import annotations

import contextlib
import os
import re
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


_TMP_NAME = re.compile(r"\.tmp-[0-9a-f]{8}(\.[^.]*)?$")   # atomic_path's temporary names


def remove_orphans(folder: str) -> list[str]:
    """Delete the temporary files that writers killed inside ``atomic_path`` left in ``folder``;
    returns their names. Only for a folder no other process writes (a locked run folder): in a
    shared one, such as the decode cache, they may belong to a live writer."""
    if not os.path.isdir(folder):
        return []
    removed = sorted(n for n in os.listdir(folder) if _TMP_NAME.search(n))
    for name in removed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    return removed
