import os
import sys
from pathlib import Path

# test helpers (peft_files.py, golden/reference_int.py) import by plain name
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "golden"))
# never reach a hub from tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
