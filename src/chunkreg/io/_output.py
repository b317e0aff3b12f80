"""Output groups that know the run that made them, so resuming is safe.

An output group records the *signature* of the run that created it: the parameters, shapes,
dtypes and chunking that determine its content. Opening it again with the same signature resumes;
a different signature is refused with :class:`IncompatibleOutputError` and nothing is touched,
unless ``overwrite=True`` asks for a fresh start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors
import zarr.storage

from .. import __version__
from ..errors import IncompatibleOutputError, InputError

__all__ = ["describe_differences", "normalise_signature", "open_output_group"]

_ATTR = "chunkreg"


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, type) and issubclass(value, np.generic):
        return np.dtype(value).name
    raise TypeError(f"cannot store {type(value).__name__} in a run signature")


def normalise_signature(signature: dict) -> dict:
    """Return ``signature`` as plain JSON values (tuples become lists, numpy scalars numbers).

    Parameters
    ----------
    signature : dict
        Run parameters, shapes, dtypes, chunks.

    Returns
    -------
    dict
        The same content as stored in an output's attributes.
    """
    return json.loads(json.dumps(signature, default=_json_default, sort_keys=True))


def describe_differences(old: dict, new: dict) -> list[str]:
    """List human-readable differences between two normalised signatures."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            lines.append(
                f"{key}: existing {old.get(key, '<absent>')!r}, requested {new.get(key, '<absent>')!r}"
            )
    return lines


def _open_existing(store) -> zarr.Group | None:
    try:
        return zarr.open_group(store, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    except (zarr.errors.NodeTypeValidationError, zarr.errors.ContainsArrayError) as exc:
        raise IncompatibleOutputError(
            f"output {store!s} exists and is a zarr array, not a chunkreg output group; "
            "refusing to touch it. Choose another path."
        ) from exc


def open_output_group(
    store, *, signature: dict, overwrite: bool = False, kind: str = "output"
) -> zarr.Group:
    """Create, reopen (to resume) or replace a chunkreg output group.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        Location of the output group. It must be reachable from every worker, so in-memory
        stores only work with the synchronous scheduler.
    signature : dict
        JSON-able description of everything that determines the output's content.
    overwrite : bool
        Delete an existing output at ``store`` first (only if it is a zarr node).
    kind : str
        Workflow name stored with the signature (e.g. ``"flow"``).

    Returns
    -------
    zarr.Group
        Opened in append mode.

    Raises
    ------
    IncompatibleOutputError
        If an output exists whose signature differs, or that chunkreg did not write; it is left
        untouched.
    """
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    wanted = normalise_signature({"workflow": kind, **signature})
    if isinstance(store, str) and "://" not in store:
        path = Path(store)
        if path.exists() and not (
            path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))
        ):
            raise IncompatibleOutputError(
                f"output {store!r} exists and is not a zarr store; refusing to touch it. Choose another path."
            )
    existing = _open_existing(store)
    if existing is not None and not overwrite:
        meta = existing.attrs.get(_ATTR)
        if not isinstance(meta, dict) or "signature" not in meta:
            raise IncompatibleOutputError(
                f"output {store!s} exists but was not written by chunkreg; choose another path or pass "
                "overwrite=True (--overwrite) to replace it."
            )
        differences = describe_differences(meta["signature"], wanted)
        if differences:
            raise IncompatibleOutputError(
                f"output {store!s} exists from a different run, so it cannot be resumed:\n  "
                + "\n  ".join(differences)
                + "\nPass overwrite=True (--overwrite) to start afresh, or choose another output path."
            )
        return zarr.open_group(store, mode="a")
    group = zarr.open_group(store, mode="w")
    group.attrs[_ATTR] = {"signature": wanted, "version": __version__}
    return group


def require_shared_store(group: zarr.Group, client) -> None:
    """Refuse in-memory outputs when tasks run in other processes (their writes would be lost).

    Parameters
    ----------
    group : zarr.Group
        The output group.
    client : distributed.Client or SYNCHRONOUS
        Where the tasks will run.

    Raises
    ------
    InputError
        If ``group`` lives in a MemoryStore and ``client`` is not synchronous.
    """
    from ..execution import is_synchronous

    if isinstance(group.store, zarr.storage.MemoryStore) and not is_synchronous(client):
        raise InputError(
            "the output is an in-memory zarr store, which worker processes cannot write to; "
            "give a path (or shared store) for the output, or use scheduler='synchronous'."
        )
