"""``-v/-q/--log-level`` of the workflow scripts: the same levels as the command line."""

import logging

import pytest

from chunkreg._logging import configure_logging
from chunkreg._scripts import script_main
from chunkreg.execution._progress import Progress


def _run(config):
    logging.getLogger("chunkreg.script").info("planned 3 tasks")
    logging.getLogger("chunkreg.script").warning("a warning")
    progress = Progress(1, "tasks")  # stderr, as the workflows draw it
    progress.update()
    progress.close()
    print("summary: done")
    return 0


@pytest.mark.parametrize(
    "flags, info, warning, progress",
    [
        ([], False, True, True),
        (["-v"], True, True, True),
        (["-q"], False, False, False),
        (["--log-level", "info"], True, True, True),
    ],
)
def test_script_messages_follow_the_options(tmp_path, capsys, flags, info, warning, progress):
    config = tmp_path / "c.toml"
    config.write_text("")
    try:
        assert script_main(_run, "test", argv=[*flags, str(config)]) == 0
    finally:
        configure_logging(logging.WARNING)
    captured = capsys.readouterr()
    assert ("planned 3 tasks" in captured.err) is info
    assert ("a warning" in captured.err) is warning
    assert ("tasks: 1/1" in captured.err) is progress
    assert captured.out == "summary: done\n"  # the summary is printed at every level
