"""Shared plumbing for the scripts in ``workflows/``: read a TOML config, check every value.

A config value reaches a workflow function only after it was checked against the type the
function expects, so a typo cannot change what a run does: ``overwrite = "false"`` (a string,
which Python would take as true) is refused with a one-line error naming the table and key, as
is an unknown key, or a key the script sets itself (such as ``client``, which comes from the
``[cluster]`` table). The accepted keys and their types come from the workflow functions'
signatures — annotations, else the type of the default — so they follow the functions; only
parameters without either are typed here (:data:`TILE`, :data:`OVERLAP` ...).

Every script also takes a ``[storage_options]`` table (:func:`storage_options_table`): fsspec
options for the URL inputs and outputs of the config, as ``--storage-option`` on the CLI.
"""

from __future__ import annotations

import argparse
import collections.abc
import functools
import inspect
import operator
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from .errors import ChunkregError, InputError, TaskFailedError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CLUSTER_TYPES",
    "OVERLAP",
    "RUN_KEYS",
    "SHARDS",
    "TILE",
    "check_tables",
    "cluster_table",
    "function_types",
    "load_config",
    "options",
    "script_main",
    "section",
    "storage_options_table",
]

#: Per-axis sizes: one integer for every axis, or one per axis.
TILE = int | list[int]
#: A halo: ``"auto"``, or per-axis sizes.
OVERLAP = Literal["auto"] | int | list[int]
#: A shard shape: ``"auto"`` (the input's), ``"none"`` (unsharded), or per-axis sizes.
SHARDS = Literal["auto", "none"] | int | list[int]
#: The ``[cluster]`` table (see :func:`chunkreg.execution.client_from_config`).
CLUSTER_TYPES: dict[str, Any] = {
    "kind": Literal["local", "address", "synchronous", "slurm"],
    "workers": int,
    "memory_limit": str | int,
    "address": str,
    "jobs": int,
    "start_timeout": int | float | str,
    "slurm": dict,
}

#: Execution parameters every script sets itself (from ``[cluster]``), and where they come from.
RUN_KEYS = {
    "client": "[cluster]",
    "scheduler": "[cluster]",
    "n_workers": "[cluster] workers",
    "progress": "always on",
}

_NONE = type(None)
_NOUNS = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table"}


def load_config(path) -> dict:
    """Parse a TOML config file; paths inside it are relative to the current directory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc


# -- types ------------------------------------------------------------------------------------


def _args(tp) -> tuple:
    return typing.get_args(tp)


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _strip_none(tp):
    """``X | None`` -> ``X``: TOML has no None; leaving a key out gives the default."""
    if _is_union(tp):
        rest = [a for a in _args(tp) if a is not _NONE]
        if not rest:
            return Any
        return functools.reduce(operator.or_, rest)
    return tp


def matches(value: Any, tp) -> bool:
    """Whether a TOML value has type ``tp`` (bool is not an integer; an integer is a number)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if _is_union(tp):
        return any(matches(value, a) for a in _args(tp))
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in _args(tp))
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        items = _args(tp)
        if origin is tuple and items and items[-1] is not Ellipsis:
            return len(value) == len(items) and all(map(matches, value, items))
        return not items or all(matches(v, items[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or tp in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if tp in (list, tuple, collections.abc.Sequence):
        return isinstance(value, list)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a type this module does not know: the function checks it


def describe_type(tp, plural: bool = False) -> str:
    """Words for a type, as used in the error messages ("a list of integers")."""
    if _is_union(tp):
        return " or ".join(describe_type(a, plural) for a in _args(tp))
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(_toml(a) for a in _args(tp))
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        items = _args(tp)
        inner = describe_type(items[0], plural=True) if items else "values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if tp is bool:
        return "booleans (true/false)" if plural else "true or false"
    noun = _NOUNS.get(tp, getattr(tp, "__name__", str(tp)))
    if plural:
        return noun + "s"
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _toml(value: Any) -> str:
    """A value as TOML spells it (true/false, quoted strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def describe_value(value: Any) -> str:
    """Words for a TOML value: ``the string 'false'``."""
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, list):
        kind = "list"
    else:
        kind = _NOUNS.get(type(value), type(value).__name__)
    if kind == "table":
        return "a table"
    return f"the {kind} {_toml(value)}"


def function_types(
    func: Callable, *, skip: Sequence[str] = (), types: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The keyword parameters of ``func`` and the TOML types they accept.

    Parameters
    ----------
    func : callable
        A workflow function (or a class such as a dataclass of options).
    skip : sequence of str
        Parameters that are not config keys (the data, the client, ...).
    types : mapping, optional
        Types for parameters whose annotation or default does not say (e.g. ``tile=None``).

    Returns
    -------
    dict
        ``{name: type}``; ``Any`` where nothing says (the function checks the value).
    """
    result = {}
    namespace = {**vars(typing), **vars(collections.abc), **getattr(func, "__globals__", {})}
    module = sys.modules.get(getattr(func, "__module__", ""), None)
    if module is not None:
        namespace.update(vars(module))
    for name, p in inspect.signature(func).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        tp = Any
        if types and name in types:
            tp = types[name]
        elif p.annotation is not p.empty:
            annotation = p.annotation
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, namespace)
                except Exception:  # an annotation only a type checker resolves
                    annotation = Any
            tp = _strip_none(annotation)
        elif isinstance(p.default, (bool, int, float, str)):
            tp = type(p.default)
        result[name] = tp
    return result


# -- tables -----------------------------------------------------------------------------------


def _table(config: Mapping, name: str) -> dict:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise InputError(f"config [{name}] must be a table, got {describe_value(value)}.")
    return dict(value)


def _check_values(name: str, table: Mapping, types: Mapping[str, Any]) -> None:
    for key, value in table.items():
        tp = types.get(key, Any)
        if not matches(value, tp):
            raise InputError(
                f"config [{name}] {key} must be {describe_type(tp)}, got {describe_value(value)}."
            )


def section(
    config: Mapping,
    name: str,
    *,
    required: Sequence[str] = (),
    allowed: Sequence[str] | None = None,
    types: Mapping[str, Any] | None = None,
    reserved: Mapping[str, str] | None = None,
) -> dict:
    """Return table ``name`` of ``config``, with its keys and value types checked.

    Parameters
    ----------
    config : mapping
        The parsed TOML.
    name : str
        Table name (``"output"``, ``"cluster.slurm"`` is not split).
    required : sequence of str
        Keys that must be present.
    allowed : sequence of str, optional
        Further keys that may be present (any type); default: the keys of ``types``, or any
        key when neither is given.
    types : mapping, optional
        ``{key: type}`` of the accepted keys (see :func:`function_types`).
    reserved : mapping, optional
        ``{key: where it comes from}`` for keys the script sets itself.

    Returns
    -------
    dict

    Raises
    ------
    InputError
        Naming the table and key: a missing or unknown key, a reserved key, a wrong type.
    """
    table = _table(config, name)
    for key in table:
        if reserved and key in reserved:
            raise InputError(
                f"config [{name}] {key} is set by the script itself ({reserved[key]}); remove "
                "it from this table."
            )
    missing = [k for k in required if k not in table]
    if missing:
        raise InputError(f"config table [{name}] needs {missing}.")
    accepted = set(required) | set(allowed or ()) | set(types or ())
    if allowed is not None or types is not None:
        unknown = sorted(set(table) - accepted)
        if unknown:
            raise InputError(
                f"config table [{name}] has unknown keys {unknown}; allowed: {sorted(accepted)}."
            )
    _check_values(name, table, types or {})
    return table


def options(
    config: Mapping,
    name: str,
    func: Callable,
    *,
    skip: Sequence[str] = (),
    reserved: Mapping[str, str] | None = None,
    required: Sequence[str] = (),
    types: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Return table ``name`` as keyword arguments of ``func``, every key and value checked.

    Parameters
    ----------
    config : mapping
        The parsed TOML.
    name : str
        Table name.
    func : callable
        The function the table's keys are passed to.
    skip : sequence of str
        Parameters of ``func`` that are not accepted in the table.
    reserved : mapping, optional
        ``{parameter: where it comes from}`` for parameters the script passes itself (also
        not accepted in the table).
    required : sequence of str
        Keys that must be present.
    types : mapping, optional
        Types of parameters that have neither an annotation nor a telling default.
    extra : mapping, optional
        ``{key: type}`` of keys the script reads itself (not passed to ``func``).

    Returns
    -------
    dict
    """
    reserved = dict(reserved or {})
    accepted = {**function_types(func, skip=(*skip, *reserved), types=types), **(extra or {})}
    untyped = sorted(k for k, tp in accepted.items() if tp is Any)
    if untyped:  # a parameter added without an annotation: type it, or skip it
        raise TypeError(
            f"parameters {untyped} of {getattr(func, '__name__', func)} have no annotation or "
            f"default that says their type; give their types= for table [{name}]."
        )
    return section(config, name, required=required, types=accepted, reserved=reserved)


def check_tables(config: Mapping, names: Sequence[str]) -> None:
    """Refuse top-level tables (or keys) other than ``names`` (a misspelt table name)."""
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise InputError(
            f"config has unknown tables {['[' + u + ']' for u in unknown]}; known: {sorted(names)}."
        )


def cluster_table(config: Mapping) -> dict | None:
    """The ``[cluster]`` table, its keys and value types checked (None when absent)."""
    if "cluster" not in config:
        return None
    return section(config, "cluster", types=CLUSTER_TYPES)


#: Name of the table of fsspec options every script accepts.
STORAGE_OPTIONS = "storage_options"


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed TOML value, tables and arrays searched."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def storage_options_table(config: dict) -> tuple[dict, set[str]]:
    """Take the ``[storage_options]`` table out of ``config``; return it and the URL schemes it
    applies to.

    The table holds fsspec filesystem options (``endpoint_url``, ``anon``, ``key``, a
    ``client_kwargs`` sub-table, ...) that every URL input and output of the config
    (``s3://...``, ``gs://...``; any table, any key) is opened with, as
    ``--storage-option KEY=VALUE`` does on the command line. Its keys are the filesystem's, so
    they are not checked against a list; the table must be a table, and a config without any
    URL is refused (the options would apply to nothing).

    Raises
    ------
    InputError
        ``storage_options`` is not a table, or the config has no URL for it to apply to.
    """
    from .io import url_schemes

    if STORAGE_OPTIONS not in config:
        return {}, set()
    table = config.pop(STORAGE_OPTIONS)
    if not isinstance(table, Mapping):
        raise InputError(
            f"config [{STORAGE_OPTIONS}] must be a table of fsspec options (e.g. endpoint_url = "
            f'"http://127.0.0.1:9000"), got {describe_value(table)}.'
        )
    schemes = url_schemes(_strings(config))
    if table and not schemes:
        raise InputError(
            f"config [{STORAGE_OPTIONS}] applies to URL inputs or outputs (s3://...); the "
            "config has none."
        )
    return dict(table), schemes


def script_main(run, description: str, argv=None) -> int:
    """Parse ``CONFIG`` (and ``-v/-q/--log-level``) from the command line, call ``run(config)``.

    A ``[storage_options]`` table is taken out of the config and applied to its URLs
    (:func:`storage_options_table`) while ``run`` runs. Bad configs and inputs exit with 2
    (nothing was written), failed tasks with 1.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "config", help="TOML configuration file (see the example next to this script)"
    )
    from ._logging import configure_logging, verbosity_level
    from .cli._common import add_logging_arguments

    add_logging_arguments(parser, top_level=True)
    args = parser.parse_args(argv)
    # as on the command line: -v what runs where, -q errors and the summary only
    configure_logging(verbosity_level(args.verbose, args.quiet, args.log_level))
    from .execution._progress import silenced
    from .io import storage_defaults

    try:
        config = load_config(args.config)
        storage, schemes = storage_options_table(config)
        with storage_defaults(schemes, storage), silenced(args.quiet):
            return int(run(config) or 0)
    except TaskFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ChunkregError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .io import credentials_problem

        problem = credentials_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2
