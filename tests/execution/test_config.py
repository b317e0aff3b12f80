from typing import ClassVar

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


class _FakeSLURMCluster:
    """Stands in for dask_jobqueue.SLURMCluster: a threads-only LocalCluster that records
    how it was scaled and, with ``start=False``, never starts a worker (jobs stuck)."""

    instances: ClassVar[list] = []
    start = False

    def __init__(self, **kwargs):
        from distributed import LocalCluster

        self.kwargs = kwargs
        self.scaled: list = []
        self._local = LocalCluster(n_workers=0, processes=False, dashboard_address=None)
        self.scheduler_address = self._local.scheduler_address
        type(self).instances.append(self)

    def scale(self, n=None, jobs=0):
        self.scaled.append((n, jobs))
        if type(self).start:
            self._local.scale(n or jobs)

    def __getattr__(self, name):
        return getattr(self._local, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._local.close()


@pytest.fixture
def fake_slurm(monkeypatch):
    import shutil
    import sys
    import types

    module = types.ModuleType("dask_jobqueue")
    module.SLURMCluster = _FakeSLURMCluster
    monkeypatch.setitem(sys.modules, "dask_jobqueue", module)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name: "/usr/bin/sbatch" if name == "sbatch" else real_which(name)
    )
    monkeypatch.setattr(_FakeSLURMCluster, "instances", [])
    return _FakeSLURMCluster


@pytest.mark.cluster
def test_slurm_no_worker_in_time_is_a_clear_error(fake_slurm, monkeypatch):
    monkeypatch.setattr(fake_slurm, "start", False)
    table = {"kind": "slurm", "workers": 3, "start_timeout": 1, "slurm": {"cores": 2}}
    with pytest.raises(InputError) as info, client_from_config(table):
        pass
    assert str(info.value).startswith(
        "no Dask worker joined the SLURM cluster within 1 s ([cluster] start_timeout; "
        "asked for 3 workers)."
    )
    (cluster,) = fake_slurm.instances
    assert cluster.kwargs == {"cores": 2}
    assert cluster.scaled == [(3, 0)]  # workers = 3 scales to three workers


@pytest.mark.cluster
def test_slurm_scales_to_workers_and_jobs(fake_slurm, monkeypatch):
    monkeypatch.setattr(fake_slurm, "start", True)
    with client_from_config({"kind": "slurm", "workers": 2, "start_timeout": "20s"}) as c:
        assert c.scheduler_info()["workers"]
    with client_from_config({"kind": "slurm", "jobs": 2, "start_timeout": 20}) as c:
        assert c.scheduler_info()["workers"]
    assert [cl.scaled for cl in fake_slurm.instances] == [[(2, 0)], [(None, 2)]]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"jobs": 2, "workers": 4}, "not both"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"start_timeout": "soon"}, "start_timeout must be seconds or a duration"),
        ({"start_timeout": 0}, "start_timeout must be > 0"),
        ({"memory_limit": "4GiB"}, r"keys \['memory_limit'\] do not apply to kind = 'slurm'"),
    ],
)
def test_bad_slurm_tables(fake_slurm, table, message):
    with pytest.raises(InputError, match=message), client_from_config({"kind": "slurm", **table}):
        pass
    assert fake_slurm.instances == []  # refused before any job was submitted


def test_slurm_without_sbatch_is_refused(fake_slurm, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with (
        pytest.raises(InputError, match="sbatch, which is not on this machine's PATH"),
        client_from_config({"kind": "slurm"}),
    ):
        pass
    assert fake_slurm.instances == []


def test_slurm_default_start_timeout_is_finite():
    from chunkreg.execution._config import DEFAULT_START_TIMEOUT

    assert 0 < DEFAULT_START_TIMEOUT < float("inf")
