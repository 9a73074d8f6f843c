"""The local cluster's port choice, without starting anything."""

from __future__ import annotations

import socket

import pytest

from dpctl_ray.local import nodes as local


def test_a_random_port_never_lands_on_a_ray_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the kernel hands out Ray's dashboard-agent port, another port is taken: `ray start` would refuse it."""
    handed_out = iter([52365, 6379, 41000])

    class FakeSocket:
        def __enter__(self):
            self.port = next(handed_out)
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def bind(self, address: tuple[str, int]) -> None:
            pass

        def getsockname(self) -> tuple[str, int]:
            return ("", self.port)

    monkeypatch.setattr(socket, "socket", FakeSocket)
    assert local._free_port() == 41000
