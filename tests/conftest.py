"""Fixtures shared by several test files (built only when a test asks for them)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_app_paths(tmp_path_factory):
    """The web app's models, tiny and trained for the tests (`app_fixture.make_tiny_models`), once per run."""
    import torch

    from app_fixture import make_tiny_models

    torch.set_num_threads(1)  # tiny models, one photo at a time: a second thread only waits when cores are shared
    return make_tiny_models(tmp_path_factory.mktemp("app_models"))


@pytest.fixture(scope="session")
def tiny_app_models(tiny_app_paths):
    """The tiny models loaded as the app loads them (`app.core.load_models`), shared by the app's tests."""
    from app.core import load_models

    return load_models(tiny_app_paths)
