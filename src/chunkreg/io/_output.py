"""Output groups that know the run that made them, so resuming is safe.

An output group records the *signature* of the run that created it: the parameters, shapes,
dtypes and chunking that determine its content, plus a content fingerprint of every input.
Opening it again with the same signature and unchanged inputs resumes; a different signature
is refused with :class:`IncompatibleOutputError`, a changed input with
:class:`InputChangedError`, and nothing is touched, unless ``overwrite=True`` asks for a fresh
start. An output may never overlap an input, with or without ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors
import zarr.storage

from .._version import __version__
from ..errors import IncompatibleOutputError, InputChangedError, InputError
from ._arrays import require_url_support
from ._fingerprint import describe_change, fingerprint
from ._lease import LEASE_GROUP, acquire_lease, refuse_if_leased
from ._locations import check_no_overlap, flatten_inputs, locate

__all__ = [
    "check_side_files",
    "describe_differences",
    "normalise_signature",
    "open_output_group",
    "record_side_files",
]

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


_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


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


def _check_local_target(path: Path, store: str) -> None:
    """Refuse a local output path that holds something other than a zarr store."""
    if not path.exists():
        return
    if not path.is_dir():
        raise IncompatibleOutputError(
            f"output {store!r} exists and is a file, not a zarr store; refusing to touch it. "
            "Choose another path."
        )
    names = {p.name for p in path.iterdir() if not _PARTIAL.search(p.name)}
    if names and not names & {"zarr.json", ".zgroup", ".zarray"} and names != {LEASE_GROUP}:
        raise IncompatibleOutputError(
            f"output {store!r} exists and is not a zarr store; refusing to touch it. "
            "Choose another path."
        )


def _foreign_entries(path: Path) -> list[str]:
    """Top-level entries of a local output that are neither zarr nodes nor chunkreg's."""
    foreign = []
    for entry in sorted(path.iterdir()):
        if entry.name in ("zarr.json", LEASE_GROUP):
            continue
        if entry.is_dir() and ((entry / "zarr.json").exists() or entry.name.startswith("_")):
            continue
        foreign.append(entry.name)
    return foreign


def _check_replaceable(existing: zarr.Group, store, path: Path | None) -> None:
    """With overwrite: refuse to delete anything that chunkreg did not write."""
    meta = existing.attrs.get(_ATTR)
    if not isinstance(meta, dict) or "signature" not in meta:
        raise IncompatibleOutputError(
            f"output {store!s} exists but was not written by chunkreg; refusing to delete it, "
            "also with overwrite=True (--overwrite). Remove it yourself or choose another path."
        )
    foreign = _foreign_entries(path) if path is not None else []
    if foreign:
        raise IncompatibleOutputError(
            f"output {store!s} holds entries chunkreg did not write ({', '.join(foreign[:5])}); "
            "refusing to delete them, also with overwrite=True (--overwrite). Move them out "
            "or choose another output path."
        )


def _clear(store, path: Path | None) -> None:
    """Delete everything in an output but its lease."""
    if path is not None:
        for entry in path.iterdir():
            if entry.name == LEASE_GROUP:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return
    from zarr.core.sync import sync

    async def clear(s) -> None:
        keys = [k async for k in s.list()]
        for key in keys:
            if not key.startswith(f"{LEASE_GROUP}/"):
                await s.delete(key)

    group = zarr.open_group(store, mode="r+")
    sync(clear(group.store))


def _remove_partial_writes(path: Path) -> None:
    """Delete the temporary files of writes a killed run left (zarr renames them when done)."""
    for folder, _, files in os.walk(path):
        for name in files:
            if _PARTIAL.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


def _check_inputs_unchanged(store, meta: dict, current: dict) -> None:
    recorded = meta.get("inputs")
    if not isinstance(recorded, dict):
        return  # written by a version that did not record its inputs' content
    for name in sorted(set(recorded) & set(current)):
        change = describe_change(recorded[name], current[name])
        if change:
            raise InputChangedError(
                f"output {store!s} cannot be resumed: the input {name} "
                f"({current[name].get('location')}) changed since this output was started "
                f"({change}). Resuming would mix results from both versions. Pass "
                "overwrite=True (--overwrite) to start afresh, or restore the input."
            )


def _check_side_files(store, meta: dict | None, side_files: list[str], overwrite: bool) -> None:
    if overwrite:
        return
    ours = set(meta.get("side_files", [])) if isinstance(meta, dict) else set()
    for side in side_files:
        if Path(side).exists() and side not in ours:
            raise IncompatibleOutputError(
                f"{side!r} exists and was not written by the run of output {store!s}; refusing "
                "to overwrite it. Pass overwrite=True (--overwrite) to replace it, or choose "
                "another output path."
            )


def check_side_files(
    files: Sequence,
    *,
    output,
    overwrite: bool = False,
    inputs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Refuse side files that overlap an input, or exist and are not this output's own.

    Call it before a run starts for files written beside ``output`` after the run (positions
    tables, plots); then :func:`record_side_files` before writing them.

    Parameters
    ----------
    files : sequence of path
        The side files.
    output : str or os.PathLike
        The output they belong to (its run record lists the side files it wrote).
    overwrite : bool
        Replace existing side files.
    inputs : mapping, optional
        ``{name: path or array}`` the run reads; no side file may overlap one.

    Returns
    -------
    list of str
        The side files' resolved paths.

    Raises
    ------
    InputError, IncompatibleOutputError
    """
    side = [str(locate(p)) for p in files]
    for path in side:
        check_no_overlap(path, {**(inputs or {}), "output": output}, what="side file")
    meta = None
    if output is not None and locate(output) is not None and locate(output).local_path is not None:
        existing = _open_existing(os.fspath(output)) if Path(output).is_dir() else None
        meta = existing.attrs.get(_ATTR) if existing is not None else None
    _check_side_files(output, meta, side, overwrite)
    return side


def record_side_files(output, files: Sequence) -> None:
    """Add ``files`` to the side files the run record of ``output`` owns (write them after).

    Parameters
    ----------
    output : str or os.PathLike
        An existing chunkreg output group.
    files : sequence of path
    """
    side = {str(locate(p)) for p in files}
    group = zarr.open_group(os.fspath(output), mode="a")
    meta = dict(group.attrs.get(_ATTR, {}))
    if not side <= set(meta.get("side_files", [])):
        meta["side_files"] = sorted(set(meta.get("side_files", [])) | side)
        group.attrs[_ATTR] = meta


def _process_local(obj: Any) -> bool:
    """Whether ``obj`` lives in this process's memory (a MemoryStore or a memory:// URL)."""
    where = locate(obj)
    return where is not None and (
        where.store.startswith("MemoryStore@") or where.store == "memory://"
    )


def refuse_process_local(client, *, output=None, inputs: Mapping[str, Any] | None = None) -> None:
    """Refuse in-memory inputs or outputs when tasks run in other processes.

    Workers of a LocalCluster or a remote scheduler cannot see this process's memory: they
    would read empty inputs or write outputs that are lost. Only ``scheduler="synchronous"``
    runs the tasks here.

    Parameters
    ----------
    client : distributed.Client, SYNCHRONOUS or None
        Where the tasks will run; None (not known) and SYNCHRONOUS accept everything.
    output : optional
        The output location (path, URL, store or group).
    inputs : mapping, optional
        ``{name: input}`` as :func:`~chunkreg.io.check_no_overlap` takes them.

    Raises
    ------
    InputError
        Naming the first in-memory input or output.
    """
    from ..execution import is_synchronous

    if client is None or is_synchronous(client):
        return
    named = list(flatten_inputs(inputs or {}))
    if output is not None:
        named.append(("output", output))
    for name, value in named:
        if _process_local(value):
            what = "the output" if name == "output" else f"the input {name}"
            raise InputError(
                f"{what} is an in-memory zarr store ({locate(value)}), which the workers of "
                "a cluster cannot see (they run in other processes); save it to a path or a "
                "shared store (s3://...), or use scheduler='synchronous'."
            )


def open_output_group(
    store,
    *,
    signature: dict,
    overwrite: bool = False,
    kind: str = "output",
    inputs: Mapping[str, Any] | None = None,
    sources: Mapping[str, Any] | None = None,
    side_files: Sequence = (),
) -> zarr.Group:
    """Create, reopen (to resume) or replace a chunkreg output group.

    Every check runs before anything is written: the output must not overlap an input, an
    existing output must match the run (signature and input content) unless ``overwrite``,
    and no other live run may hold it (see :mod:`chunkreg.io._lease`). Inside a workflow
    wrapped in :func:`~chunkreg.io.output_scope`, the output's lease is taken here and held
    until the workflow returns.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        Location of the output group. It must be reachable from every worker, so in-memory
        stores only work with the synchronous scheduler.
    signature : dict
        JSON-able description of everything that determines the output's content.
    overwrite : bool
        Delete an existing output at ``store`` first. Only a group chunkreg wrote is deleted
        (and only its zarr nodes); anything else is refused.
    kind : str
        Workflow name stored with the signature (e.g. ``"flow"``).
    inputs : mapping, optional
        ``{name: array or path}`` the run reads (a list of them for a set of tiles): the
        output may not overlap any, and their content fingerprints (store listing and sampled
        chunk hashes) are recorded, so that a resume with changed inputs is refused.
    sources : mapping, optional
        Further input locations only checked for overlap (e.g. the groups that ``inputs``
        were opened from, or inputs whose content is already in ``signature``).
    side_files : sequence of path
        Files the run writes beside the output (tables, positions). Each must not overlap an
        input, and one that exists is only replaced with ``overwrite`` or when the run of this
        output wrote it.

    Returns
    -------
    zarr.Group
        Opened in append mode.

    Raises
    ------
    InputError
        The output or a side file overlaps an input, or cannot be written.
    IncompatibleOutputError
        An output exists whose signature differs, or that chunkreg did not write; it is left
        untouched.
    InputChangedError
        An input's content changed since the existing output was started.
    OutputInUseError
        Another live run writes the output.
    """
    from ..execution._client import active_client

    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if isinstance(store, str):
        if store.lower().startswith(("http://", "https://")):
            raise InputError(
                f"output {store!r}: http(s):// stores are read-only; write the output to a "
                "path or a bucket (s3://, gs://...)."
            )
        require_url_support(store, name="output")
    wanted = normalise_signature({"workflow": kind, **signature})
    inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
    refuse_process_local(active_client(), output=store, inputs=inputs)
    refuse_process_local(active_client(), inputs=sources)
    side = [str(locate(p)) for p in side_files]
    for read in (inputs, sources or {}):
        check_no_overlap(store, read)
        for path in side:
            check_no_overlap(path, {**read, "output": store}, what="side file")
    where = locate(store)
    local = where.local_path if where is not None else None
    if local is not None:
        _check_local_target(local, store)
    refuse_if_leased(store)  # a run that is creating it right now: say so, not "not chunkreg's"
    existing = _open_existing(store)
    meta = existing.attrs.get(_ATTR) if existing is not None else None
    current = {name: fingerprint(value) for name, value in flatten_inputs(inputs)}
    current = {name: fp for name, fp in current.items() if fp is not None}
    if existing is not None and not overwrite:
        if not isinstance(meta, dict) or "signature" not in meta:
            raise IncompatibleOutputError(
                f"output {store!s} exists but was not written by chunkreg; refusing to touch it, "
                "also with overwrite=True (--overwrite). Choose another path."
            )
        # changed input content first: parts of a signature derive from it (intensities)
        _check_inputs_unchanged(store, meta, current)
        differences = describe_differences(meta["signature"], wanted)
        if differences:
            raise IncompatibleOutputError(
                f"output {store!s} exists from a different run, so it cannot be resumed:\n  "
                + "\n  ".join(differences)
                + "\nPass overwrite=True (--overwrite) to start afresh, or choose another output path."
            )
    elif existing is not None:
        _check_replaceable(existing, store, local)
    _check_side_files(store, meta if existing is not None else None, side, overwrite)
    lease = acquire_lease(store)
    if lease is not None and lease.took_over and local is not None:
        _remove_partial_writes(local)  # of the crashed run that held the lease
    if existing is not None and not overwrite:
        group = zarr.open_group(store, mode="a")
        recorded = group.attrs[_ATTR]
        if not set(side) <= set(recorded.get("side_files", [])):
            recorded["side_files"] = sorted(set(recorded.get("side_files", [])) | set(side))
            group.attrs[_ATTR] = recorded
        return group
    if existing is not None:
        _clear(store, local)
    record = normalise_signature(
        {
            "signature": wanted,
            "version": __version__,
            "inputs": current,
            "side_files": sorted(set(side)),
        }
    )
    try:  # the group and its run record in one write
        return zarr.create_group(store, overwrite=False, attributes={_ATTR: record})
    except zarr.errors.ContainsGroupError:  # left by a run that died right after creating it
        group = zarr.open_group(store, mode="r+")
        group.attrs[_ATTR] = record
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
        If ``group`` lives in memory (a MemoryStore, a memory:// URL) and ``client`` is not
        synchronous. Workflows opened inside :func:`~chunkreg.execution.open_client` are
        refused earlier, by :func:`open_output_group`, also for in-memory inputs.
    """
    refuse_process_local(client, output=group)
