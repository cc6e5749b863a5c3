"""Small file helpers shared by the platform's processes and its launcher."""
from __future__ import annotations

import os
from pathlib import Path


def replace_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` in one step: a reader sees the old content or the new, never an
    empty or half-written file (write to a sibling, then rename over)."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
