from pathlib import Path

import pytest

from tests.support.note_model import tiny_base


@pytest.fixture(scope="session")
def note_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One toy base for the session's model tests (seconds to build)."""
    return tiny_base(tmp_path_factory.mktemp("note-base"))
