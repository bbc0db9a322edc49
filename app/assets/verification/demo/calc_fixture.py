"""Demo fixture: `agent_output/calc.py` in the build workspace must add two numbers.

Runs inside the verification runner, which sets ORKET_WORKSPACE to the build
workspace. calc.py is loaded on each call, so a missing or broken file fails the
scenario instead of the whole fixture.
"""

import importlib.util
import os
from pathlib import Path

CALC_PATH = Path("agent_output") / "calc.py"


def load_calc():
    path = Path(os.environ["ORKET_WORKSPACE"]) / CALC_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{CALC_PATH.as_posix()} not found in the workspace")
    spec = importlib.util.spec_from_file_location("calc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verify(input_data):
    return load_calc().add(input_data["a"], input_data["b"])
