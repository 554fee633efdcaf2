"""Where the notification configuration is looked for (kept apart so a CLI command checks it without pydantic)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.settings import Settings

__all__ = ["CONFIG_ENV", "config_files"]

CONFIG_ENV = "RUNBOOK_CONFIG"
"""Names a configuration file that wins over the project's and the user's."""


def config_files(settings: Settings) -> list[Path]:
    """Configuration files in precedence order (whether they exist or not): ``RUNBOOK_CONFIG``, the project's
    ``.runbook/config.yaml``, the user's ``$XDG_CONFIG_HOME/runbook/config.yaml`` (``~/.config/runbook/config.yaml``)."""
    files = []
    if os.environ.get(CONFIG_ENV):
        files.append(Path(os.environ[CONFIG_ENV]))
    files.append(settings.state_dir / "config.yaml")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    files.append(Path(base) / "runbook" / "config.yaml")
    return files
