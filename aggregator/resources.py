"""Where the files beside the package are: templates/ and config/.

In a checkout (and an editable install) they sit next to aggregator/; a wheel
installs them under {sys.prefix}/share/ilos-aggregator/ (pyproject's
data-files).
"""

from __future__ import annotations

import sys
from pathlib import Path

_CANDIDATES = (Path(__file__).resolve().parent.parent, Path(sys.prefix) / "share" / "ilos-aggregator")


def resource_dir(name: str) -> Path:
    for base in _CANDIDATES:
        if (base / name).is_dir():
            return base / name
    raise FileNotFoundError(f"{name}/ is neither beside the package nor in {_CANDIDATES[1]}")
