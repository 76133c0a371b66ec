import pytest


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A private Minari root, so tests never touch ~/.minari."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root
