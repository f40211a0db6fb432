"""The python sandbox against escape attempts: each is contained, with a clear error.

Runs as whatever user the suite runs as (root here and in CI), where RLIMIT_NPROC does nothing:
the fork bomb test is the evidence that the other layers hold.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentic.agents.tools import PythonSandbox, SandboxResult, kernel_isolation, python_tool
from agentic.agents.tools.sandbox import CHILD_SCRIPT, KernelIsolation, _namespace_setup
from agentic.core import ConfigError


@pytest.fixture(scope="module")
def sandbox() -> PythonSandbox:
    # 5 s: startup alone can take a second when the machine is loaded; no test waits on it.
    return PythonSandbox(timeout_s=5.0, memory_mb=256, max_output_chars=2000)


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable folder outside the sandbox, as the sandbox's victim."""
    return tmp_path_factory.mktemp("victim")


async def run(sandbox: PythonSandbox, code: str) -> SandboxResult:
    result = await sandbox.run(code)
    assert result.seconds < 10, result  # generous: CI machines can be loaded
    return result


def test_kernel_layers_are_available_where_ci_runs() -> None:
    iso = kernel_isolation()
    if sys.platform == "linux" and platform.machine() == "x86_64" and os.geteuid() == 0:
        assert iso.namespaces and iso.seccomp, iso.detail


async def test_normal_code_works_and_can_use_its_own_directory(sandbox: PythonSandbox) -> None:
    code = (
        "import math, os, json, threading\n"
        "print(math.factorial(10))\n"
        "with open('notes.txt', 'w') as f: f.write('kept')\n"
        "os.mkdir('sub'); os.rename('notes.txt', 'sub/n.txt')\n"
        "print(open('sub/n.txt').read(), os.listdir('.'))\n"
        "t = threading.Thread(target=print, args=('from a thread',)); t.start(); t.join()\n"
        "print(os.getcwd())\n"
    )
    result = await run(sandbox, code)
    assert result.error is None and result.exit_code == 0, result
    lines = result.stdout.splitlines()
    assert lines[:3] == ["3628800", "kept ['sub']", "from a thread"]
    cwd = lines[3]
    assert "agentic-sandbox-" in cwd
    removed = not await asyncio.to_thread(os.path.exists, cwd)
    assert removed, "the temporary directory must be removed afterwards"


async def test_exceptions_are_reported_with_the_users_traceback_only(
    sandbox: PythonSandbox,
) -> None:
    result = await run(sandbox, "def f():\n    return 1 / 0\nf()\n")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.exit_code == 1
    assert 'File "<sandbox>", line 2, in f' in result.stderr
    assert "_sandbox_child" not in result.stderr


async def test_tcp_connect_to_a_local_server_never_arrives(sandbox: PythonSandbox) -> None:
    connections = 0

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        result = await run(sandbox, code)
        await asyncio.sleep(0.2)
    finally:
        server.close()
        await server.wait_closed()
    assert result.error == "blocked: network access"
    assert connections == 0


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket()",
        "import _socket\n_socket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')",
        "import socket\nsocket.getaddrinfo('example.com', 80)",
    ],
)
async def test_network_is_blocked(sandbox: PythonSandbox, code: str) -> None:
    result = await run(sandbox, code)
    assert result.error == "blocked: network access", result


async def test_writes_outside_are_blocked_and_leave_nothing(
    sandbox: PythonSandbox, outside: Path
) -> None:
    target = outside / "escaped.txt"
    for code in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import os\nos.chdir('/')\nopen({str(target)[1:]!r}, 'w')",
        f"import shutil\nshutil.copy('/usr/lib/os-release', {str(target)!r})",
    ):
        result = await run(sandbox, code)
        assert result.error is not None and result.error.startswith("blocked: "), (code, result)
        assert not target.exists(), code
    result = await run(sandbox, f"open({str(target)!r}, 'w')")
    assert result.error == f"blocked: write outside the sandbox directory: {target}"


async def test_remove_rename_and_links_outside_are_blocked(
    sandbox: PythonSandbox, outside: Path
) -> None:
    victim = outside / "keep.txt"
    victim.write_text("precious")
    attempts = {
        f"import os\nos.remove({str(victim)!r})": "write outside",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')": "write outside",
        f"import os\nos.rename('x', {str(outside / 'x')!r})": "write outside",
        f"import os\nos.mkdir({str(outside / 'd')!r})": "write outside",
        f"import os\nos.chmod({str(victim)!r}, 0o777)": "write outside",
        f"import os\nos.symlink({str(victim)!r}, 'link')": "symlink",
        f"import os\nos.link({str(victim)!r}, 'hard')": "hard links",
        f"import shutil\nshutil.rmtree({str(outside)!r})": "write outside",
    }
    for code, message in attempts.items():
        result = await run(sandbox, code)
        assert result.error is not None and message in result.error, (code, result)
    assert victim.read_text() == "precious"
    assert oct(victim.stat().st_mode & 0o777) != oct(0o777)
    assert await asyncio.to_thread(os.listdir, outside) == ["keep.txt"]


async def test_patching_the_checks_from_inside_does_not_help(
    sandbox: PythonSandbox, outside: Path
) -> None:
    target = outside / "patched.txt"
    code = (
        "import builtins, os, posixpath, stat\n"
        "posixpath.realpath = os.path.realpath = lambda p, **k: os.getcwd() + '/x'\n"
        "builtins.isinstance = lambda *a: False\n"
        "stat.S_ISLNK = lambda m: False\n"
        f"open({str(target)!r}, 'w').write('x')\n"
    )
    result = await run(sandbox, code)
    assert result.error == f"blocked: write outside the sandbox directory: {target}"
    assert not target.exists()


async def test_reads_outside_the_allow_list_are_blocked(sandbox: PythonSandbox) -> None:
    secret = Path(tempfile.mkdtemp()) / "secret.txt"
    secret.write_text("token")
    try:
        result = await run(sandbox, f"print(open({str(secret)!r}).read())")
        assert result.error == f"blocked: read outside the allowed directories: {secret}"
        assert "token" not in result.stdout
        allowed = PythonSandbox(timeout_s=2.0, readable=[secret.parent])
        result = await run(allowed, f"print(open({str(secret)!r}).read())")
        assert result.error is None and result.stdout == "token\n"
    finally:
        secret.unlink()
        secret.parent.rmdir()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import subprocess\nsubprocess.run(['echo', 'hi'])", "blocked: process creation"),
        ("import os\nos.system('echo hi')", "blocked: process creation (os.system)"),
        ("import os\nos.execv('/bin/sh', ['sh'])", "blocked: process creation (os.exec)"),
        ("import os\nos.posix_spawn('/bin/sh', ['sh'], {})", "blocked: process creation"),
        ("import pty\npty.fork()", "blocked: process creation"),
        ("import _posixsubprocess", "blocked: process creation (subprocess)"),
        ("import ctypes", "blocked: native code (ctypes)"),
        ("import multiprocessing as m\nm.Process(target=print).start()", "blocked: process"),
        ("import os\nos.kill(1, 0)", "blocked: signals to other processes"),
        ("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))", "blocked: chang"),
        ("import gc\ngc.get_objects()", "blocked: heap introspection"),
    ],
)
async def test_process_creation_native_code_and_signals_are_blocked(
    sandbox: PythonSandbox, code: str, message: str
) -> None:
    result = await run(sandbox, code)
    assert result.error is not None and result.error.startswith(message), result
    assert "hi" not in result.stdout


async def test_fork_bomb_is_contained_quickly(sandbox: PythonSandbox) -> None:
    code = "import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    os.fork()\n"
    start = time.perf_counter()
    result = await run(sandbox, code)
    assert time.perf_counter() - start < 4
    assert result.error == "blocked: process creation (os.fork)"
    # The machine is fine: it can still start processes, and none of the bomb's are left
    # (each process of this run would carry its directory on its command line).
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=subprocess.PIPE)
    listing, _ = await ps.communicate()
    assert ps.returncode == 0
    assert "agentic-sandbox-" in result.stdout
    assert result.stdout.strip().encode() not in listing


def _refused_without_kernel_layers() -> None:
    """Where a kernel layer is missing, the layer cannot be tested, but a sandbox that requires
    kernel isolation must refuse to start, naming what is missing."""
    with pytest.raises(ConfigError, match="kernel isolation required but missing"):
        PythonSandbox(require_kernel_isolation=True)


async def test_kernel_refuses_what_no_audit_event_covers(sandbox: PythonSandbox) -> None:
    """posix functions without audit events (pidfd_open, pidfd_send_signal) only meet seccomp."""
    if not sandbox.isolation.seccomp:
        _refused_without_kernel_layers()
        return
    code = "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(1), 0)"
    result = await run(sandbox, code)
    assert result.error == "PermissionError: [Errno 1] Operation not permitted"


async def test_concurrent_runs_are_independent(sandbox: PythonSandbox) -> None:
    codes = [f"open('n', 'w').write('{i}')\nprint(open('n').read())" for i in range(4)]
    results = await asyncio.gather(*(sandbox.run(code) for code in codes))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]


@pytest.mark.parametrize(
    "code", ["x = bytearray(10**10)", "chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)"]
)
async def test_memory_hogs_hit_the_limit(code: str) -> None:
    # A generous wall clock: filling memory is slow on a loaded 2-core machine.
    small = PythonSandbox(timeout_s=10.0, memory_mb=128)
    result = await small.run(code)
    assert result.error == "memory limit of 128 MB exceeded", result


async def test_infinite_loop_times_out_and_large_output_is_truncated() -> None:
    fast = PythonSandbox(timeout_s=1.0, max_output_chars=100)
    start = time.perf_counter()
    result = await fast.run("print('started', flush=True)\nwhile True:\n    pass\n")
    assert time.perf_counter() - start < 3
    assert result.timed_out and result.error == "timed out after 1 s"
    assert result.stdout == "started\n"
    result = await fast.run("print('y' * 1_000_000)")
    assert result.error is None
    assert result.stdout.startswith("y" * 100 + "\n[... output truncated: ")
    assert len(result.stdout) < 200


def test_namespace_layer_alone_stops_network_and_writes(outside: Path) -> None:
    """Without the audit hook at all: a plain interpreter in the namespaces."""
    if not kernel_isolation().namespaces:
        _refused_without_kernel_layers()
        return
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    with tempfile.TemporaryDirectory() as root:
        code = (
            "import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "except OSError as e:\n    print('net', e.errno)\n"
            f"try:\n    open({str(outside / 'x')!r}, 'w')\n"
            "except OSError as e:\n    print('write', e.errno)\n"
            "open('inside.txt', 'w').write('ok')\n"
        )
        out = subprocess.run(
            [sys.executable, "-I", "-c", code],
            cwd=root,
            preexec_fn=_namespace_setup(os.path.realpath(root)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (Path(root) / "inside.txt").read_text() == "ok"
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    assert out.stdout.split("\n")[:2] == ["net 101", "write 30"]  # ENETUNREACH, EROFS


def test_seccomp_layer_alone_stops_fork_exec_and_sockets() -> None:
    if not kernel_isolation().seccomp:
        _refused_without_kernel_layers()
        return
    code = (
        "import os, runpy, socket\n"
        f"runpy.run_path({CHILD_SCRIPT!r}, run_name='child')['lock_down_kernel']()\n"
        "for name, call in [('fork', os.fork), ('exec', lambda: os.execv('/bin/true', ['t'])),\n"
        "                   ('socket', socket.socket), ('kill', lambda: os.kill(1, 0))]:\n"
        "    try:\n        call()\n        print(name, 'allowed')\n"
        "    except OSError as e:\n        print(name, e.errno)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["fork", "1", "exec", "1", "socket", "1", "kill", "1"], out


async def test_python_tool_reports_errors_as_failed_results() -> None:
    python = python_tool(timeout_s=2.0)
    ok = await python.run({"code": "print(6 * 7)"})
    assert ok.ok and ok.content == "42"
    bad = await python.run({"code": "import socket\nsocket.socket()"})
    assert not bad.ok
    assert bad.content.startswith("SandboxError: [stderr]")
    assert bad.content.endswith("[error] blocked: network access")
    missing = await python.run({"source": "print(1)"})
    assert not missing.ok and "missing required argument 'code'" in missing.content


def test_bad_sandbox_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="memory_mb"):
        PythonSandbox(memory_mb=1)
    with pytest.raises(ConfigError, match="timeout_s"):
        PythonSandbox(timeout_s=0)


NATIVE_SOURCE = (
    "#include <unistd.h>\n"
    '__attribute__((constructor)) static void ran(void) { write(1, "native code ran\\n", 16); }\n'
)


@pytest.fixture(scope="module")
def native_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A shared object whose constructor prints on load: if the text appears, native code ran."""
    # `make test` already needs a C compiler (it builds llama.cpp), so its absence is a failure
    assert shutil.which("cc") is not None, "no C compiler (cc) to build the shared object"
    folder = tmp_path_factory.mktemp("native")
    (folder / "evil.c").write_text(NATIVE_SOURCE)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(folder / "evil.so"), str(folder / "evil.c")],
        check=True,
        capture_output=True,
    )
    return (folder / "evil.so").read_bytes()


def _load_native(data: bytes) -> str:
    """Sandboxed code that writes the .so into its directory and imports it as an extension."""
    name = "evil.cpython-311-x86_64-linux-gnu.so"
    return (
        f"open({name!r}, 'wb').write({data!r})\n"
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('evil', {name!r})\n"
        "importlib.util.module_from_spec(spec)\n"
    )


async def test_native_extension_written_into_the_sandbox_is_refused(native_so: bytes) -> None:
    sandbox = PythonSandbox(timeout_s=5.0)
    result = await run(sandbox, _load_native(native_so))
    assert "native code ran" not in result.stdout, result
    assert result.error is not None
    assert result.error.startswith("blocked: native extension from the sandbox directory: /")
    assert result.error.endswith("/evil.cpython-311-x86_64-linux-gnu.so"), result


async def test_audit_hook_alone_refuses_native_extensions(native_so: bytes) -> None:
    """Without namespaces (so no noexec mount), the hook is the barrier."""
    sandbox = PythonSandbox(timeout_s=5.0)
    seccomp = sandbox.isolation.seccomp
    sandbox.isolation = KernelIsolation(namespaces=False, seccomp=seccomp, detail="")
    result = await run(sandbox, _load_native(native_so))
    assert "native code ran" not in result.stdout, result
    assert result.error is not None
    assert result.error.startswith("blocked: native extension from the sandbox directory"), result


def test_noexec_mount_alone_stops_loading_a_written_shared_object(native_so: bytes) -> None:
    """Without the audit hook: a plain interpreter in the namespaces, dlopen through ctypes."""
    if not kernel_isolation().namespaces:
        _refused_without_kernel_layers()
        return
    code = (
        f"open('evil.so', 'wb').write({native_so!r})\n"
        "import ctypes\n"
        "try:\n    ctypes.CDLL('./evil.so')\n"
        "except OSError as e:\n    print('refused', e)\n"
    )
    with tempfile.TemporaryDirectory() as root:
        out = subprocess.run(
            [sys.executable, "-I", "-c", code],
            cwd=root,
            preexec_fn=_namespace_setup(os.path.realpath(root)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert "native code ran" not in out.stdout, out
    assert out.stdout.startswith("refused"), out
    assert "failed to map segment" in out.stdout, out


FILL_DISK = (
    "import os\n"
    "for i in range(200):\n"
    "    with open(f'f{i}', 'wb') as f:\n"
    "        f.write(os.urandom(1 << 20))\n"
    "    print(i, flush=True)\n"
)


async def test_writing_past_the_disk_quota_fails() -> None:
    """200 MB in files of 1 MB each, under the 16 MB per-file limit, against an 8 MB quota."""
    sandbox = PythonSandbox(timeout_s=8.0, disk_mb=8)
    start = time.perf_counter()
    result = await run(sandbox, FILL_DISK)
    assert time.perf_counter() - start < 8
    assert result.error is not None and result.error.startswith("disk quota of 8 MB exceeded")
    assert not result.timed_out
    written = len(result.stdout.split())
    # tmpfs: the kernel stops it at 8 MB; the watchdog may let a few more through
    assert 4 <= written < (9 if sandbox.isolation.tmpfs else 60), result


async def test_watchdog_enforces_the_disk_quota_without_tmpfs() -> None:
    sandbox = PythonSandbox(timeout_s=8.0, disk_mb=8)
    sandbox.isolation = KernelIsolation(
        namespaces=sandbox.isolation.namespaces, seccomp=sandbox.isolation.seccomp, detail=""
    )
    result = await run(sandbox, FILL_DISK + "import time\ntime.sleep(60)\n")
    assert result.error == "disk quota of 8 MB exceeded", result
    assert not result.timed_out
    assert 4 <= len(result.stdout.split()) < 60, result


def test_disk_quota_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="disk_mb"):
        PythonSandbox(disk_mb=0)


@pytest.fixture(autouse=True)
def _no_leftover_sandbox_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # a temp folder of this test's own: another xdist worker's live sandboxes are not leftovers
    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    yield
    left = sorted(own.glob("agentic-sandbox-*"))
    assert not left, f"left behind: {left}"
