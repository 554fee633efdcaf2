"""rotate-log: rotate a log file that grew too big (copy-truncate, gzip, keep N archives).

Written in Python to show the Python form: typed params, a step function with its
precondition, idempotency check and verification as decorated functions, and a second
step added with the same keys a YAML step uses.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from pydantic import Field

from runner import Context, Params, Runbook


class RotateParams(Params):
    """Params of rotate-log."""

    file: str = Field(description="Log file to rotate")
    max_size_mb: float = Field(default=100.0, gt=0, description="Rotate only when the file is at least this big")
    keep: int = Field(default=5, ge=1, le=100, description="Compressed archives to keep (file.1.gz ... file.N.gz)")


rb = Runbook(
    "rotate-log",
    description="Rotate a log file that is too big: copy-truncate it to file.1.gz and keep N archives.",
    version="1",
    tags=("logs", "disk"),
    params=RotateParams,
    lock="rotate-log:{{ params.file }}",
)


def _archive(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}.gz")


@rb.step(timeout="10m")
def rotate(ctx: Context, p: RotateParams) -> dict[str, object]:
    """Copy-truncate the log into file.1.gz, shifting older archives up."""
    path = Path(p.file)
    for n in range(p.keep, 0, -1):  # oldest first, so nothing is overwritten
        src = _archive(path, n)
        if src.exists():
            src.replace(_archive(path, n + 1))
    size = path.stat().st_size
    with path.open("rb") as src_f, gzip.open(_archive(path, 1), "wb") as dst:
        shutil.copyfileobj(src_f, dst)
    with path.open("r+b") as f:  # copy-truncate: writers keep their open file handle
        f.truncate(0)
    ctx.log(f"rotated {size} bytes into {_archive(path, 1).name}")
    return {"rotated_bytes": size, "archive": str(_archive(path, 1))}


@rotate.precondition
def log_exists(ctx: Context, p: RotateParams) -> bool:
    """the log file exists"""
    return Path(p.file).is_file()


@rotate.check
def small_enough(ctx: Context, p: RotateParams) -> bool:
    """the log is smaller than max_size_mb"""
    return Path(p.file).stat().st_size < p.max_size_mb * 1024 * 1024


@rotate.verify(within="10s", every="1s")
def archived(ctx: Context, p: RotateParams) -> bool:
    """the newest archive exists and the log was truncated"""
    path = Path(p.file)
    return _archive(path, 1).is_file() and path.stat().st_size < p.max_size_mb * 1024 * 1024


def prune(ctx: Context, p: RotateParams) -> dict[str, object]:
    """Delete archives beyond `keep`."""
    path = Path(p.file)
    removed = []
    n = p.keep + 1
    while _archive(path, n).exists():
        _archive(path, n).unlink()
        removed.append(_archive(path, n).name)
        n += 1
    return {"removed": removed}


rb.add_step("prune", description="Delete archives beyond keep", python={"call": f"{__name__}:prune"}, idempotent=True)
