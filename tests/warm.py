"""The project's commands (`python train.py …`, `python -m vae.… …`, `python -m bench.… …`) run in processes
forked from one warm Python.

A fresh `python train.py` spends ~4 s of a small run's ~6 s importing torch, Accelerate, scikit-learn and the
package, and the tests start such commands about a hundred times. Here one server process imports all that once
(and runs nothing), then forks a process per command. That process runs the command as `python` would, in a
process of its own: its own argv, working folder, environment, stdin (/dev/null), stdout and stderr, exit code,
signals, and a normal interpreter exit (atexit handlers, threads joined). What it shares with the server is only
what was decided at import time; so a command whose environment differs from the server's (a fake Hub's URL, a
launcher's variables), that runs elsewhere than the repository, or that is not one of ours runs as a fresh
`subprocess` instead. `start` and `run` choose; VAE_TEST_WARM=0 makes every command a fresh process.

    proc = warm.start([sys.executable, "train.py", ...], cwd=ROOT, stdout=subprocess.PIPE, ...)  # Popen-like
    result = warm.run([sys.executable, "-m", "vae.tsne", ...], cwd=ROOT)  # subprocess.run(capture_output, text)

Each command has a "monitor", forked from the server, which forks the command, tells the test its pid, waits for it
and sends its exit status: the server stays single-threaded and never waits.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRELOAD = [  # what the commands import; a fresh process imports the same modules, so nothing else differs
    "torch",
    "torch._dynamo",  # imported by the first optimizer (torch.optim's decorators): ~1.2 s
    "accelerate",
    "sklearn.manifold",
    "matplotlib.figure",
    "huggingface_hub",
    "vae.training",
    "vae.evaluate",
    "vae.tsne",
    "vae.steering",
    "vae.hub",
]
IGNORED_ENV = {"PYTEST_CURRENT_TEST"}  # changes with every test; read by nothing the server imports
PRELOADED_ENV: dict[str, str] = {}  # the variables the server's imports set (os.environ.setdefault at import)


# ---------------------------------------------------------------------------------------------------------------------
# The server: python tests/warm.py SOCKET
# ---------------------------------------------------------------------------------------------------------------------


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def serve(path: str) -> dict:
    """Preload, then fork a monitor per connection; returns only in a command's process, with its request."""
    before = dict(os.environ)
    for name in PRELOAD:
        __import__(name)
    PRELOADED_ENV.update({k: v for k, v in os.environ.items() if before.get(k) != v})  # scikit-learn sets two
    # What the imports made, out of the garbage collector's sight: a forked command's collections (the last one at
    # its exit above all) would otherwise write to every object's header and so copy the whole server's memory, page
    # by page: 1.9 s of a refusal's 2 s. Its own objects are collected as usual.
    gc.freeze()
    assert threading.active_count() == 1, "forking is safe only while the server has one thread"
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(64)
    server.settimeout(2)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the monitors
    print(json.dumps({"ready": PRELOADED_ENV}), flush=True)
    while os.getppid() == parent:  # ends when the test process does, however it ends
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            server.close()
            return monitor(conn)
        conn.close()
    sys.exit(0)


def monitor(conn: socket.socket) -> dict:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # so that waitpid sees the command's status
    conn.settimeout(None)
    request = json.loads(conn.makefile().readline())
    pid = os.fork()
    if pid == 0:
        conn.close()
        return request
    send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    send(conn, {"returncode": os.waitstatus_to_exitcode(status)})
    os._exit(0)


def become(request: dict) -> None:
    """Make this forked process `python ARGV…` started in CWD with ENV, stdin /dev/null, writing to the files named."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in PRELOADED_ENV.items():  # what the imports set, as they would in a fresh process
        os.environ.setdefault(key, value)
    for fd, name, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_APPEND),
        (2, request["stderr"], os.O_WRONLY | os.O_APPEND),
    ):
        opened = os.open(name, flags)
        os.dup2(opened, fd)
        os.close(opened)


def run_command(argv: list[str], path: list[str]) -> None:
    """Run `python ARGV…` in this process; its SystemExit or exception ends the process as it would end python."""
    import runpy

    if argv[0] == "-m":
        sys.argv, sys.path = [argv[1], *argv[2:]], [os.getcwd(), *path]
        sys.modules.pop(argv[1], None)  # as in a fresh process, where `-m`'s module is not imported before it runs
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path = list(argv), [str(Path(argv[0]).resolve().parent), *path]
        runpy.run_path(argv[0], run_name="__main__")


# ---------------------------------------------------------------------------------------------------------------------
# The tests' side
# ---------------------------------------------------------------------------------------------------------------------


class Server:
    """This test process's warm server, started on first use and stopped when the test process ends."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="warm-python-"))
        self.socket = str(self.folder / "socket")
        self.env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, __file__, self.socket],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, whose exit stops the server
        )
        ready = self.process.stdout.readline()
        if not ready.startswith('{"ready"'):
            raise RuntimeError(f"the warm Python did not start (see the output above): {ready!r}")
        self.preloaded_env = json.loads(ready)["ready"]
        atexit.register(self.stop)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def differs(self, env: dict) -> set[str]:
        """The variables whose values in ENV differ from the server's, less those that its imports set to ENV's value
        (the test process set them when it imported the same module)."""
        changed = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        return {k for k in changed - IGNORED_ENV if env.get(k) != self.preloaded_env.get(k)}


_server: Server | None = None
_lock = threading.Lock()


def ours(cmd: list[str], cwd) -> bool:
    """`python train.py …`, `python -m vae.… …` or `python -m bench.… …`, run from the repository."""
    if len(cmd) < 2 or cmd[0] != sys.executable or cwd is None or Path(cwd).resolve() != ROOT:
        return False
    return cmd[1] == "train.py" or (cmd[1] == "-m" and len(cmd) > 2 and cmd[2].startswith(("vae.", "bench.")))


def server_for(cmd: list[str], cwd, env: dict | None) -> Server | None:
    """The warm server that can run CMD, or None: a fresh process. The environment a test gives a command is the one
    it runs with; what the server imported must have seen the same. When this test process's own environment has
    changed since the server started (a library may set a variable), a new server starts with it; a command given
    another environment than this process's is started fresh."""
    global _server
    if os.environ.get("VAE_TEST_WARM") == "0" or not ours(cmd, cwd):
        return None
    if env is not None and env != dict(os.environ):
        return None
    with _lock:
        if _server is not None and (_server.differs(dict(os.environ)) or _server.process.poll() is not None):
            _server.stop()  # the commands it forked run on: they are its monitors' children
            _server = None
        if _server is None:
            _server = Server()
    return _server


class Process:
    """A forked command with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, server: Server, cmd: list[str], cwd, stdout, stderr, text: bool) -> None:
        self.args, self.text, self.returncode = cmd, text, None
        self.files: dict[str, Path | None] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="warm-command-"))  # its output: the command's, not the server's
        self.output: dict[str, str | bytes | None] = {}
        for name, target in (("stdout", stdout), ("stderr", stderr)):
            if target == subprocess.DEVNULL:
                self.files[name] = None
            elif target == subprocess.STDOUT:
                self.files[name] = self.files["stdout"]
            elif hasattr(target, "fileno"):  # an open file: the command appends to it, as to an inherited descriptor
                self.files[name] = Path(target.name)
            else:  # PIPE, or None (inherit): a file, read (or copied to the test's own stream) when the command ends
                self.files[name] = self.folder / name
                self.files[name].touch()
        self.inherit = {name for name, target in (("stdout", stdout), ("stderr", stderr)) if target is None}
        self.piped = {name for name, target in (("stdout", stdout), ("stderr", stderr)) if target == subprocess.PIPE}
        request = {
            "argv": cmd[1:],
            "cwd": str(cwd),
            "env": dict(os.environ),
            "stdout": str(self.files["stdout"] or os.devnull),
            "stderr": str(self.files["stderr"] or os.devnull),
        }
        self.conn = socket.socket(socket.AF_UNIX)
        self.conn.connect(server.socket)
        self.buffer = b""
        send(self.conn, request)
        self.pid = self.receive(timeout=60)["pid"]

    def receive(self, timeout: float | None) -> dict:
        while b"\n" not in self.buffer:
            self.conn.settimeout(timeout)
            try:
                chunk = self.conn.recv(4096)
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            if not chunk:
                raise RuntimeError(f"the warm Python's monitor of {self.args} ended without a word")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.wait(timeout=0.000001)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.receive(timeout)["returncode"]
            self.conn.close()
            for name in self.piped | self.inherit:
                data = self.files[name].read_bytes()
                self.output[name] = data.decode(errors="replace") if self.text else data
            for name in self.inherit:
                getattr(sys, name).write(self.output[name] if self.text else self.output[name].decode(errors="replace"))
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple:
        self.wait(timeout)
        return tuple(self.output.get(name) if name in self.piped else None for name in ("stdout", "stderr"))

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended since: as Popen.send_signal
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.wait()


def start(cmd: list[str], cwd=None, env: dict | None = None, stdout=None, stderr=None, text: bool = False):
    """subprocess.Popen(cmd, cwd=…, env=…, stdout=…, stderr=…, text=…), forked from the warm server when it can be."""
    server = server_for(cmd, cwd, env)
    if server is None:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)
    return Process(server, cmd, cwd, stdout, stderr, text)


def run(cmd: list[str], cwd=None, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, cwd=…, env=…, capture_output=True, text=True, timeout=…), forked when it can be."""
    with start(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


if __name__ == "__main__":
    original_path = sys.path[1:]  # without this file's folder, which python put first
    sys.path.insert(0, str(ROOT))  # the package, to preload it
    request = serve(sys.argv[1])
    become(request)
    run_command(request["argv"], original_path)
