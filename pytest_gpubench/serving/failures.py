"""Why a server failed, from its exit code and its logs: the class goes first in the failure's message."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

# (class, pattern) in priority order: the first that matches the logs names the failure
LOG_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
    for name, pattern in (
        ("out-of-memory", r"CUDA out of memory|OutOfMemoryError|out of memory|Cannot allocate memory|MemoryError|"
                          r"No available memory for the cache blocks|KV cache .* (larger|exceeds)"),
        ("nccl-error", r"NCCL (error|WARN)|ncclSystemError|ncclInternalError|ncclUnhandledCudaError|ProcessGroupNCCL"),
        ("cuda-error", r"CUDA error|cudaError\w+|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+|no CUDA-capable device|"
                       r"CUDA driver version is insufficient"),
        ("gated-model-or-token", r"GatedRepoError|401 Client Error|403 Client Error|Access to model .* is restricted|"
                                 r"Invalid (user )?token|You are trying to access a gated repo|HF_TOKEN"),
        ("model-not-found", r"RepositoryNotFoundError|404 Client Error|does not appear to have a file named|"
                            r"is not a local folder and is not a valid model identifier|"
                            r"Can't load the configuration of|No such file or directory: .*config\.json|"
                            r"Unrecognized model in|model .* not found|"
                            # transformers serve, given a folder that does not exist, blames the repo id's form
                            r"Repo id must be in the form|HFValidationError|Incorrect path_or_model_id"),
        ("port-in-use", r"Address already in use|\[Errno 98\]|address in use|port .* is (already )?in use"),
        ("bad-engine-option", r"error: unrecognized arguments|error: argument|error: the following arguments are required|"
                              r"No such option|invalid choice|unexpected keyword argument"),
    )
)

# Only lines that say something went wrong name the class, and only near the end of a log: a server that
# notes HF_TOKEN is unset, or retries after an "out of memory" warning, and then dies of something else, has
# that something else as its cause.
TAIL_LINES = 120  # vLLM's root-cause traceback and the API server's own one after it fit
FATAL_LINE = re.compile(
    r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception)\b"  # an exception's own line: "torch.OutOfMemoryError: ..."
    r"|\b(?:ERROR|CRITICAL|FATAL)\b|Fatal Python error"  # a logger's error levels; the interpreter's last words
    r"|\berror:"  # command lines: "vllm serve: error: unrecognized arguments"
    r"|Segmentation fault|core dumped|\bAborted\b",
)


def fatal_lines(log_text: str) -> str:
    """The lines near the end of a log that report an error, in order."""
    tail = log_text.splitlines()[-TAIL_LINES:]
    return "\n".join(line for line in tail if FATAL_LINE.search(line))


def classify(returncode: int | None, log_text: str, phase: str) -> str:
    """The failure class: from the fatal lines at the end of the log when they say, else from how the process
    ended and when. ``log_text`` is one log, or the fatal lines of several."""
    fatal = fatal_lines(log_text)
    for name, pattern in LOG_PATTERNS:
        if pattern.search(fatal):
            return name
    if returncode is not None and returncode in (-signal.SIGKILL, 137):
        return "out-of-memory"  # killed with no word in its logs: the kernel's OOM killer, most often
    if phase == "running":
        return "crashed-mid-run"
    return "startup-timeout" if returncode is None else "crashed-on-start"


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class PhaseTimes:
    """How long each phase took, in seconds, for the failure message and extra_info."""

    phases: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases.items()) or "no phase finished"


class ServerFailure(Exception):
    """A server that did not start, or died, or answered wrongly. ``str()`` is the one-line reason that a
    failed test's first line shows; ``logs`` are the full, redacted stdout and stderr."""

    def __init__(self, failure_class: str, summary: str, log_paths: tuple[Path, ...], logs: dict[str, str],
                 times: PhaseTimes, last_line: str = "") -> None:
        self.failure_class = failure_class
        self.summary = summary
        self.log_paths = log_paths
        self.logs = logs
        self.times = times
        self.last_line = last_line
        paths = ", ".join(str(p) for p in log_paths)
        tail = f"; last log line: {last_line}" if last_line else ""
        super().__init__(f"[{failure_class}] {summary} ({times.describe()}){tail}; full logs: {paths}")
