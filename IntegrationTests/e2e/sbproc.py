"""The processes the e2e tests start: `switchboard serve` (`Node`) and
`redis-server` (`RedisServer`) on loopback ports chosen at run time, each
stopped by its PID. Every wait for readiness has a deadline."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import requests

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTEN_RE = re.compile(r"wss?://(\[[^\]]+\]|[^\s/:]+):(\d+)/ws")

DEFAULT_TIMEOUT = 5.0
TOKEN_SECRET = "s3cret-e2e-0123456789abcdef-0123456789"  # --token-secret of the token_node fixture (>= 32 bytes)

# With a token key configured, a node denies by default; the tests written before permissions
# existed run their token nodes with every namespace flag on (IntegrationTests/e2e/test_auth.py tests the flags).
OPEN_PERMISSIONS_YAML = """\
defaults:
  allowSubscribeForClient: true
  allowSubscribeForAnonymous: true
  allowPublishForClient: true
  allowPublishForAnonymous: true
  allowHistoryForClient: true
  allowHistoryForAnonymous: true
  allowPresenceForClient: true
  allowPresenceForAnonymous: true
"""

def binary_path() -> str:
    path = os.environ.get("SWITCHBOARD_BIN", ".build/debug/switchboard")
    if not os.path.isabs(path):
        path = os.path.join(REPO_ROOT, path)
    return path


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class NodeStartError(RuntimeError):
    pass


class Node:
    """One running `switchboard serve` process."""

    def __init__(self, args: list[str], api_key: str, log_path: str, env: dict[str, str] | None = None,
                 start_timeout: float = 30.0, user: str | None = None):
        self.api_key = api_key
        self.log_path = log_path
        self.args = args
        self._log = open(log_path, "wb")
        self.stdout_lines: list[str] = []
        self._line_event = threading.Event()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        # The server must not pick up proxies or anything else from the caller.
        full_env.update(env or {})
        # `user`: run as that (unprivileged) account, with its group and no other.
        identity: dict[str, Any] = {}
        if user is not None:
            import pwd
            identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=full_env,
            cwd=REPO_ROOT,
            **identity,
        )
        self.pid = self.process.pid
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        try:
            self._wait_listening(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:  # ends at EOF, i.e. when the process exits
            self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._line_event.set()
        self._line_event.set()

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stdout_lines):
                m = LISTEN_RE.search(line)
                if m:
                    self.host = m.group(1).strip("[]")
                    self.port = int(m.group(2))
                    self.listen_line = line
                    host = m.group(1)
                    ws, http = ("wss", "https") if "wss://" in line else ("ws", "http")
                    self.ws_url = f"{ws}://{host}:{self.port}/ws"
                    self.echo_url = f"{ws}://{host}:{self.port}/echo"
                    self.http_url = f"{http}://{host}:{self.port}"
                    return
            if self.process.poll() is not None:
                raise NodeStartError(
                    f"switchboard exited with {self.process.returncode} before listening\n"
                    f"args: {self.args}\nstdout: {self.stdout_lines}\nstderr:\n{self.log_tail()}")
            self._line_event.wait(0.05)
            self._line_event.clear()
        raise NodeStartError(f"no 'ws://HOST:PORT/ws' line on stdout within {timeout}s; "
                             f"stdout: {self.stdout_lines}\nstderr:\n{self.log_tail()}")

    # -- lifecycle ---------------------------------------------------------

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Safe to call twice."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
        finally:
            # The reader ends at EOF, which comes once every writer of the pipe is gone. Not
            # always with the process: a Swift binary that crashed runs swift-backtrace, which
            # inherits the pipe and can outlive it (seen hanging for minutes). Closing the pipe
            # under a blocked reader blocks too, so it is closed only after the reader ended;
            # otherwise the daemon reader is left behind and the test goes on (bounded).
            self._reader.join(2.0)
            if self.process.stdout is not None and not self._reader.is_alive():
                try:
                    self.process.stdout.close()
                except OSError:
                    pass
            if not self._reader.is_alive():
                try:
                    self._log.close()
                except OSError:
                    pass

    def log_tail(self, n: int = 60) -> str:
        try:
            self._log.flush()
        except (OSError, ValueError):
            pass
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- HTTP ---------------------------------------------------------------

    def http(self, method: str, path: str, timeout: float = DEFAULT_TIMEOUT, **kw: Any) -> requests.Response:
        """One HTTP request to the node; never goes through a proxy."""
        with requests.Session() as s:
            s.trust_env = False
            return s.request(method, self.http_url + path, timeout=timeout, **kw)

    def api(self, method: str, body: Any = None, key: str | None = "default", timeout: float = DEFAULT_TIMEOUT,
            raw_body: bytes | None = None) -> requests.Response:
        headers = {}
        if key == "default":
            key = self.api_key
        if key is not None:
            headers["Authorization"] = f"apikey {key}"
        if raw_body is not None:
            headers["Content-Type"] = "application/json"
            return self.http("POST", f"/api/{method}", timeout=timeout, data=raw_body, headers=headers)
        return self.http("POST", f"/api/{method}", timeout=timeout, json=body if body is not None else {},
                         headers=headers)

    def api_result(self, method: str, body: Any = None) -> Any:
        r = self.api(method, body)
        assert r.status_code == 200, f"API {method} {body!r}: HTTP {r.status_code} {r.text[:500]}"
        doc = r.json()
        assert "error" not in doc, f"API {method} {body!r}: error {doc['error']}"
        assert "result" in doc, f"API {method}: no result in {doc}"
        return doc["result"]

    def api_error(self, method: str, body: Any = None) -> dict:
        r = self.api(method, body)
        assert r.status_code == 200, f"API {method}: HTTP {r.status_code} {r.text[:500]}"
        doc = r.json()
        assert "error" in doc, f"API {method} {body!r}: expected an error, got {doc}"
        return doc["error"]

    async def aapi_result(self, method: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.api_result, method, body)

    async def aapi_error(self, method: str, body: Any = None) -> dict:
        return await asyncio.to_thread(self.api_error, method, body)

    async def apublish(self, channel: str, data: Any, **extra: Any) -> dict:
        return await self.aapi_result("publish", {"channel": channel, "data": data, **extra})

# --------------------------------------------------------------------------
# Redis (for the Redis broker): one redis-server process on loopback
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    return os.environ.get("REDIS_SERVER_BIN", "redis-server")


def resp_ping(port: int, timeout: float = 0.5) -> bool:
    """True when a RESP `PING` on 127.0.0.1:port is answered `+PONG`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            buf = b""
            deadline = time.monotonic() + timeout
            while b"\r\n" not in buf and len(buf) < 1024 and time.monotonic() < deadline:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
            return buf.startswith(b"+PONG\r\n")
    except OSError:
        return False


class RedisStartError(RuntimeError):
    pass


class RedisServer:
    """`redis-server` without persistence on 127.0.0.1:`port`, in the foreground.

    `kill()` is SIGKILL (all data lost: nothing is saved), `restart()` starts
    a fresh, empty server on the same port, `stop()` is SIGTERM then SIGKILL.
    Every process it starts is stopped by its PID."""

    def __init__(self, port: int, log_path: str, workdir: str):
        self.port = port
        self.log_path = log_path
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []     # every redis-server process started, in order
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.alive(), "redis-server is already running"
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.workdir, "--logfile", ""]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            cwd=self.workdir)
        self.pids.append(self.process.pid)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(f"redis-server exited with {self.process.returncode} on port "
                                      f"{self.port}:\n{self.log_tail()}")
            if resp_ping(self.port, 0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server on port {self.port} did not answer PING within {timeout}s:\n"
                              f"{self.log_tail()}")

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port (after kill/stop)."""
        if self.alive():
            raise AssertionError("restart: redis-server still running")
        self.start(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

def start_redis(log_path: str, workdir: str, registry: list, attempts: int = 5) -> RedisServer:
    """Starts a `RedisServer` on a free port, retrying on another port when the one
    probed free was taken before redis-server bound it. The server is put in
    `registry` (the caller's safety net) from its first start on; raises
    RedisStartError after `attempts` failures."""
    errors = []
    for _ in range(attempts):
        candidate = RedisServer(free_port(), log_path, workdir)
        registry.append(candidate)
        try:
            candidate.start()
        except RedisStartError as e:
            errors.append(str(e))
            candidate.stop()
            registry.remove(candidate)
            continue
        return candidate
    raise RedisStartError("could not start redis-server:\n" + "\n".join(errors[-2:]))
