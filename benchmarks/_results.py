"""What every benchmark does last: write its figures as JSON next to the table it printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(results: dict[str, Any], out: Path | str) -> Path:
    """`results` as indented JSON at `out` (its folder made); prints where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return out
