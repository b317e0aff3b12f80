"""``-v/-q/--log-level``: what the command line says, before or after the command."""

import logging

import numpy as np
import pytest
import zarr

from chunkreg._logging import verbosity_level
from chunkreg.cli import build_parser, main
from chunkreg.testing import textured_image


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() installs a handler on the chunkreg logger: take it away again after each test."""
    yield
    logger = logging.getLogger("chunkreg")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    logging.getLogger("distributed").setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        ([], logging.WARNING),
        (["-v"], logging.INFO),
        (["-vv"], logging.DEBUG),
        (["-q"], logging.ERROR),
        (["--log-level", "debug"], logging.DEBUG),
        (["-q", "--log-level", "INFO"], logging.INFO),
    ],
)
def test_levels_before_and_after_the_command(argv, level):
    for full in (
        [*argv, "drift", "in.zarr", "out.zarr"],
        ["drift", "in.zarr", "out.zarr", *argv],
    ):
        args = build_parser().parse_args(full)
        assert verbosity_level(args.verbose, args.quiet, args.log_level) == level


def test_subcommand_defaults_do_not_undo_top_level_options():
    args = build_parser().parse_args(["-v", "--log-level", "ERROR", "flow", "a", "b", "c"])
    assert (args.verbose, args.log_level) == (1, "ERROR")


def test_bad_level_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--log-level", "loud", "qc", "x.zarr"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


def _movie(tmp_path):
    frames = np.stack([np.roll(textured_image((48, 48), seed=1), t, axis=1) for t in range(3)])
    zarr.create_array(str(tmp_path / "movie.zarr"), data=frames, chunks=(1, 48, 48))
    return str(tmp_path / "movie.zarr")


def test_verbose_run_logs_where_it_runs_and_what_is_left(tmp_path, capsys):
    movie = _movie(tmp_path)
    argv = ["drift", movie, str(tmp_path / "out.zarr"), "--scheduler", "synchronous", "-v"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "chunkreg INFO: running every task in this process (scheduler='synchronous')" in err
    assert "chunkreg INFO: frame batches (register): 1 to run, 0 already complete" in err
    assert main(argv) == 0  # resumed: nothing left
    assert "frame batches (register): 0 to run, 1 already complete" in capsys.readouterr().err


def test_quiet_run_prints_no_progress_and_no_info(tmp_path, capsys):
    movie = _movie(tmp_path)
    assert (
        main(["-q", "drift", movie, str(tmp_path / "out.zarr"), "--scheduler", "synchronous"]) == 0
    )
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "3 frames registered" in captured.out  # the summary is still printed
