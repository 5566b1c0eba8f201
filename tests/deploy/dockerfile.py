"""Reading the root Dockerfile: its instructions, its final stage and its health check."""

import json
import re

from .support import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions():
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def final_stage():
    """The instructions from the last FROM on, as a dict (the last of each kind wins)."""
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return dict(steps[last_from:])


def healthcheck_command():
    """The exec-form command of the final stage's HEALTHCHECK."""
    return json.loads(final_stage()["HEALTHCHECK"].split(" CMD ", 1)[1])
