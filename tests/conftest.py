import pytest


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A private Minari root, so tests never touch ~/.minari."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture(autouse=True, scope="session")
def private_fit_store(tmp_path_factory):
    """A private fit store (``marl_offline_bench.fits``), so tests never read fits a user's
    runs stored, nor leave theirs in ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MARL_BENCH_FIT_STORE", str(tmp_path_factory.mktemp("fits")))
        yield
