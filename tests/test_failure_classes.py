"""Each failure class from the lines real engines print (vLLM, SGLang, transformers, NCCL, the kernel)."""

from __future__ import annotations

import signal

import pytest

from pytest_gpubench.serving.failures import classify, describe_exit
from pytest_gpubench.serving.secrets import redact, secret_values


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "out-of-memory"),
        ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`", "out-of-memory"),
        ("RuntimeError: CUDA error: an illegal memory access was encountered", "cuda-error"),
        ("RuntimeError: CUDA driver version is insufficient for CUDA runtime version", "cuda-error"),
        ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error", "nccl-error"),
        ("huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo", "gated-model-or-token"),
        ("OSError: You are trying to access a gated repo. Make sure to have access to it", "gated-model-or-token"),
        ("huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. Repository Not Found", "model-not-found"),
        ("OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/models/x'", "model-not-found"),
        ("vllm serve: error: unrecognized arguments: --tensor-paralel-size 2", "bad-engine-option"),
        ("OSError: [Errno 98] Address already in use", "port-in-use"),
        ("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use", "port-in-use"),
    ],
)
def test_log_lines_name_the_class(log: str, expected: str) -> None:
    assert classify(1, f"INFO: starting\n{log}\nexiting", "startup") == expected


def test_classes_from_how_the_process_ended() -> None:
    assert classify(-signal.SIGKILL, "loading weights...", "startup") == "out-of-memory"  # the OOM killer says nothing
    assert classify(None, "loading weights...", "startup") == "startup-timeout"
    assert classify(1, "Traceback ...\nKeyError: 'x'", "startup") == "crashed-on-start"
    assert classify(139, "Segmentation fault", "running") == "crashed-mid-run"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM" and describe_exit(3) == "exit code 3"


def test_secret_values_are_found_by_name_and_replaced() -> None:
    env = {"HF_TOKEN": "hf_abcdefghij", "OPENAI_API_KEY": "sk-0123456789", "MY_SECRET": "s3cr3tvalue",
           "PATH": "/usr/bin", "DEBUG_TOKEN": "1"}
    secrets = secret_values(env)
    assert set(secrets) == {"hf_abcdefghij", "sk-0123456789", "s3cr3tvalue"}  # "1" is too short to redact safely
    assert redact("token hf_abcdefghij key sk-0123456789 path /usr/bin", secrets) == "token *** key *** path /usr/bin"


def test_credential_shaped_strings_are_redacted_and_ordinary_text_is_not() -> None:
    body = ('{"error": "token hf_abcdefghijklmnopqrstuvwxyzAB lacks access", "key": "sk-proj-abcdefghijklmnop1234", '
            '"access_token": "eyJhbGciOiJIUzI1NiJ9.payload", "auth": "Bearer abcdefghijklmnop"}')
    assert redact(body, ()) == ('{"error": "token *** lacks access", "key": "***", "access_token": "***", '
                                '"auth": "Bearer ***"}')
    ordinary = ('{"max_tokens": 128, "usage": {"prompt_tokens": 12, "completion_tokens": 7}, '
                '"model": "meta-llama/Llama-3.1-8B", "path": "/models/hf_cache/llama", "tokenizer": "fast"}')
    assert redact(ordinary, ()) == ordinary


PASSING_MENTIONS = "\n".join([
    "INFO 05-12 10:00:01 [api_server.py:1] HF_TOKEN not set; using anonymous access to the hub",
    "WARNING 05-12 10:00:02 [gpu_worker.py:2] out of memory for the prefix cache on the first try; retrying at 0.85",
    "INFO: 401 Client Error on an optional telemetry ping, ignored",
    *(f"INFO 05-12 10:00:03 [loader.py:3] loaded shard {i} of 300" for i in range(300)),
])


def test_the_class_comes_from_the_fatal_lines_at_the_end_not_words_in_passing() -> None:
    crash = "Traceback (most recent call last):\n  File \"serve.py\", line 3, in <module>\nKeyError: 'rope_scaling'"
    assert classify(1, f"{PASSING_MENTIONS}\n{crash}", "startup") == "crashed-on-start"
    assert classify(-signal.SIGSEGV, f"{PASSING_MENTIONS}\nFatal Python error: Segmentation fault", "running") == "crashed-mid-run"
    assert classify(None, PASSING_MENTIONS, "startup") == "startup-timeout"
    # vLLM: the engine core's traceback names the cause, then the API server's says "see root cause above"
    vllm = (f"{PASSING_MENTIONS}\nERROR 05-12 10:01:00 [core.py:700] EngineCore failed to start.\n"
            "Traceback (most recent call last):\n  File \"core.py\", line 690, in run_engine_core\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
            "Traceback (most recent call last):\n  File \"api_server.py\", line 1, in <module>\n"
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    assert classify(1, vllm, "startup") == "out-of-memory"
    assert classify(1, f"{PASSING_MENTIONS}\nhuggingface_hub.errors.GatedRepoError: 401 Client Error.", "startup") \
        == "gated-model-or-token"
