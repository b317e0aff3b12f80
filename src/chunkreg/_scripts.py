"""Shared plumbing for the scripts in ``workflows/``: read a TOML config, check its tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["load_config", "script_main", "section"]


def load_config(path) -> dict:
    """Parse a TOML config file; paths inside it are relative to the current directory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc


def section(
    config: Mapping,
    name: str,
    *,
    required: Sequence[str] = (),
    allowed: Sequence[str] | None = None,
) -> dict:
    """Return table ``name`` of ``config``, checking required and allowed keys."""
    table = dict(config.get(name, {}))
    missing = [k for k in required if k not in table]
    if missing:
        raise InputError(f"config table [{name}] needs {missing}.")
    if allowed is not None:
        unknown = sorted(set(table) - set(allowed) - set(required))
        if unknown:
            raise InputError(
                f"config table [{name}] has unknown keys {unknown}; allowed: {sorted(set(allowed) | set(required))}."
            )
    return table


def script_main(run, description: str, argv=None) -> int:
    """Parse ``CONFIG`` from the command line, call ``run(config) -> exit code``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "config", help="TOML configuration file (see the example next to this script)"
    )
    args = parser.parse_args(argv)
    try:
        return int(run(load_config(args.config)) or 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
