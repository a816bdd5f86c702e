"""vLLM's own benchmark client, driven as `vllm bench serve` drives it, for the side-by-side columns of
loadgen_accuracy.py and loadgen_capacity.py. vLLM need not be installed: its wheel's Python files on the path
are enough (benchmarks/unpack_vllm_client.sh; they need aiohttp, tqdm and torch)."""

from __future__ import annotations

from typing import Any


def vllm_client_importable() -> bool:
    try:
        import vllm.benchmarks.lib.endpoint_request_func  # noqa: F401
    except ImportError:
        return False
    return True


def vllm_session(concurrency: int) -> Any:
    """An aiohttp session as vllm/benchmarks/serve.py's make_session builds it: trust_env=True, a connector
    limited to the concurrency, a six-hour timeout."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300,
                                     use_dns_cache=True, keepalive_timeout=60, enable_cleanup_closed=True,
                                     force_close=False, ssl=False)
    return aiohttp.ClientSession(connector=connector, trust_env=True, timeout=aiohttp.ClientTimeout(total=6 * 60 * 60))
