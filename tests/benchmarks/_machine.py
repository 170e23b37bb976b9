"""The machine a benchmark ran on, printed with its numbers."""

import os
import platform
import subprocess


def cpu_model() -> str:
    """The CPU's model name (from lscpu), or what platform knows of it."""
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), platform.processor()
    )


def machine() -> str:
    """CPU model and core count."""
    return f"{cpu_model()}, {os.cpu_count()} cores"
