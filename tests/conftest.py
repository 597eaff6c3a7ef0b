"""Fixtures shared by the whole suite."""
import socket

import pytest
from astropy.utils import iers


@pytest.fixture
def offline(monkeypatch):
    """No network for the test: sockets refuse to connect and astropy does not try to
    download the IERS tables (a test module opts in with
    ``pytestmark = pytest.mark.usefixtures("offline")``)."""
    def blocked(*args, **kwargs):
        raise OSError("network access blocked in tests")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    with iers.conf.set_temp("auto_download", False):
        yield
