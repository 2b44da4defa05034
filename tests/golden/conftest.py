"""Makes the pure-integer oracle (reference_int.py, beside this file) importable from the golden tests."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
