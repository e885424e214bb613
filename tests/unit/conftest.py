import pytest

from tests.factories import sample_events as _sample_events


@pytest.fixture
def sample_events():
    return _sample_events()
