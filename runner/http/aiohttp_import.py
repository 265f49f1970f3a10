"""aiohttp, imported without loading the system's CA store for contexts mtrun never uses.

When ``aiohttp.connector`` is imported it builds two default TLS contexts, a
verifying one and one that verifies nothing, and both read the system's CA
store (``set_default_verify_paths``). With OpenSSL 3 that is about a third of
an http:// run's start-up: some 700 M instructions, or 0.15-0.25 s of CPU on
every ``mtrun`` that uses the network. mtrun never uses either context: its
connector is always given mtrun's own (``network.py``: certifi's bundle or
``SSL_CERT_FILE``), and aiohttp takes the connector's context for every https
connection, to the endpoint and to a proxy alike.

So aiohttp is imported with that one call switched off, on the importing
thread only (mtrun may be a library in a program with threads of its own),
and switched back on straight after. The two contexts aiohttp keeps then
trust no certificate at all: were one of them ever used, verification would
fail, never pass.
"""

from __future__ import annotations

import ssl
import threading


def _skip_on_this_thread(context: ssl.SSLContext) -> None:
    """In place of ``SSLContext.set_default_verify_paths`` while aiohttp is imported: a no-op
    on the importing thread only, so a context another thread makes meanwhile is whole."""
    if threading.get_ident() != _IMPORTING:
        _load_ca_store(context)


_IMPORTING = threading.get_ident()
_load_ca_store = ssl.SSLContext.set_default_verify_paths
ssl.SSLContext.set_default_verify_paths = _skip_on_this_thread  # type: ignore[method-assign,assignment]
try:
    import aiohttp as aiohttp
    import aiohttp.abc
finally:
    ssl.SSLContext.set_default_verify_paths = _load_ca_store  # type: ignore[method-assign]

__all__ = ["aiohttp"]
