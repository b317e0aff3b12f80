import pytest

from chunkreg._scripts import load_config, section
from chunkreg.errors import InputError
from chunkreg.execution import SYNCHRONOUS, client_from_config


def test_synchronous_and_local():
    with client_from_config({"kind": "synchronous"}) as c:
        assert c is SYNCHRONOUS
    with client_from_config({"kind": "local", "workers": 1}) as c:
        assert len(c.nthreads()) == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "kubernetes"}, "kind must be one of"),
        ({"kind": "address"}, "needs address"),
        ({"kind": "local", "address": "tcp://x:1"}, "do not apply"),
    ],
)
def test_bad_cluster_tables(table, message):
    with pytest.raises(InputError, match=message), client_from_config(table):
        pass


def test_load_config_and_sections(tmp_path):
    (tmp_path / "c.toml").write_text('[a]\nx = 1\ny = "z"\n')
    config = load_config(tmp_path / "c.toml")
    assert section(config, "a", required=["x"], allowed=["y"]) == {"x": 1, "y": "z"}
    with pytest.raises(InputError, match="needs"):
        section(config, "a", required=["w"])
    with pytest.raises(InputError, match="unknown keys"):
        section(config, "a", allowed=["x"])
    (tmp_path / "bad.toml").write_text("[a\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "none.toml")
