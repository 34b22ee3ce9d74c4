"""The allocator tuning of a long-running server."""

from __future__ import annotations


def test_the_allocator_is_tuned_where_the_c_library_is_glibc() -> None:
    import platform

    from webhook.server.memory import tune_allocator

    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
