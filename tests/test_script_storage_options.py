"""The ``[storage_options]`` table of the workflow scripts: taken out of the config, checked,
and made the fsspec defaults of the config's URL schemes while the script runs."""

import fsspec.config
import pytest

from chunkreg._scripts import script_main, storage_options_table
from chunkreg.errors import InputError


def test_table_is_taken_out_with_the_schemes_it_applies_to():
    config = {
        "input": {"reference": "s3://b/ref.zarr", "moving": "gs://c/mov.zarr"},
        "output": {"flow": "flow.zarr"},
        "cluster": {"kind": "address", "address": "tcp://127.0.0.1:8786"},
        "storage_options": {"anon": True, "client_kwargs": {"region_name": "x"}},
    }
    table, schemes = storage_options_table(config)
    assert table == {"anon": True, "client_kwargs": {"region_name": "x"}}
    assert schemes == {"s3", "gs"}  # the scheduler's tcp:// address is not a store
    assert "storage_options" not in config  # the script's own table check never sees it
    assert storage_options_table({"input": {"stack": "s3://b/m.zarr"}}) == ({}, set())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input": {"stack": "s3://b/m.zarr"}, "storage_options": 3},
         r"\[storage_options\] must be a table of fsspec options"),
        ({"input": {"stack": "data/m.zarr"}, "storage_options": {"anon": True}},
         r"applies to URL inputs or outputs \(s3://...\); the config has none"),
    ],
)  # fmt: skip
def test_bad_tables_are_refused(config, message):
    with pytest.raises(InputError, match=message):
        storage_options_table(config)


def test_script_main_applies_and_restores_them(tmp_path, capsys):
    seen = {}

    def run(config):
        seen["config"] = config
        seen["s3"] = dict(fsspec.config.conf.get("s3", {}))
        return 0

    fsspec.config.conf["s3"] = {"key": "kept"}
    try:
        path = tmp_path / "c.toml"
        path.write_text('[input]\nstack = "s3://b/m.zarr"\n[storage_options]\nanon = true\n')
        assert script_main(run, "test", argv=[str(path)]) == 0
        assert seen["s3"] == {"key": "kept", "anon": True}
        assert seen["config"] == {"input": {"stack": "s3://b/m.zarr"}}
        assert fsspec.config.conf["s3"] == {"key": "kept"}
        path.write_text('[input]\nstack = "m.zarr"\n[storage_options]\nanon = true\n')
        assert script_main(run, "test", argv=[str(path)]) == 2
        assert "applies to URL inputs or outputs" in capsys.readouterr().err
    finally:
        fsspec.config.conf.pop("s3", None)
