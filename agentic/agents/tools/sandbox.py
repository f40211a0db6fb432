"""`python` tool: run model-written Python in a contained subprocess.

Each run gets a fresh interpreter (`sys.executable -I`), a new temporary directory as its working
directory (removed afterwards), an empty environment, its own session and process group, and
resource limits set between fork and exec. The code goes in on stdin; stdout and stderr come
back capped at `max_output_chars` each.

Layers, outermost first (`kernel_isolation()` says which ones this machine supports):

1. Kernel namespaces (root, or unprivileged user namespaces): a new network namespace with no
   interfaces, so nothing is reachable, not even 127.0.0.1; and a new mount namespace in which
   every mount is read-only except the sandbox directory, so writes elsewhere fail with EROFS.
   The sandbox directory is mounted noexec, so a shared object the code writes there cannot be
   mapped executable (dlopen fails), and, where the kernel allows it (`KernelIsolation.tmpfs`),
   it is a fresh tmpfs of `disk_mb` megabytes, so writing past the quota fails with ENOSPC.
   That tmpfs lives in memory: `disk_mb` counts against the machine's RAM while a run lasts.
2. Kernel seccomp filter (x86-64), installed by `_sandbox_child.py` before the user's code runs,
   with all capabilities dropped and no_new_privs set: no fork/exec, no sockets, no signals to
   other processes, no mount or namespace changes, no io_uring, ptrace or hard links.
3. Resource limits: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0
   and RLIMIT_NPROC. The kernel ignores RLIMIT_NPROC for root, so as root fork bombs are stopped
   by layers 2 and 4, and by the process-group kill at the end of every run.
4. A PEP 578 audit hook, always installed, that refuses the same things with a readable
   message ("blocked: network access", "blocked: write outside the sandbox directory: /x") and
   also refuses reads outside an allow-list: the sandbox directory, the interpreter's own
   prefixes and `sys.path`, a few system paths (/usr, /lib, /dev/null, /proc/self, ...) and the
   `readable` paths given to `PythonSandbox`. It also refuses to load a native extension module
   from a file under the sandbox directory, the hook's half of the noexec mount above.
5. A wall-clock timeout that kills the whole process group, and, where there is no tmpfs quota,
   a watchdog that sums the sandbox directory's disk use every 50 ms and kills the group once
   it passes `disk_mb` (best-effort: it can overshoot by what is written between two looks).

Threat model. This contains the mistakes and mischief of model-written code: network access,
file writes outside its directory, process creation (fork bombs included), signals to other
processes, runaway memory, CPU and output, infinite loops. It is not a security boundary
against a determined attacker: a kernel exploit escapes it, and where layers 1-2 are missing
(no namespaces, not x86-64) the audit hook is the only barrier against writes, processes and
network, and audit hooks can be bypassed from native code or through races. Reads are limited
by the audit hook only, so they are best-effort: data the sandbox's user can read and that
Python code opens by itself through C libraries is not checked. Run it as an unprivileged user
or inside a container or VM when the code may be hostile.
"""

from __future__ import annotations

# Over 400 lines on purpose: the layers above (namespaces, mounts with their noexec and disk
# quota, rlimits, the child set-up, the watchdog, the timeout) hold each other up, and a reader
# auditing the containment should find them in one file; the in-child half is _sandbox_child.py.
import asyncio
import contextlib
import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agentic.agents.tools.base import Tool
from agentic.core import ConfigError

__all__ = ["KernelIsolation", "PythonSandbox", "SandboxError", "SandboxResult", "python_tool"]

CHILD_SCRIPT = str(Path(__file__).with_name("_sandbox_child.py"))
EXIT_MEMORY = 120  # _sandbox_child.EXIT_MEMORY
SYSTEM_READABLE = (
    "/usr",
    "/lib",
    "/lib64",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/os-release",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = 0x1, 0x8000, -100, 442
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8
DISK_POLL_S = 0.05


class SandboxError(RuntimeError):
    """The sandboxed code failed, was blocked or timed out; the message holds its output."""


class SandboxResult(BaseModel):
    """What one run produced. `error` is None when the code exited with code 0 (it may have
    caught and handled a refusal, such as an optional `import ctypes`)."""

    model_config = ConfigDict(frozen=True)

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    error: str | None
    seconds: float = 0.0

    def render(self) -> str:
        """Output as the model should see it: stdout, then stderr and the error, labeled."""
        parts = [self.stdout.rstrip("\n")] if self.stdout else []
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr.rstrip("\n"))
        if self.error:
            parts.append(f"[error] {self.error}")
        return "\n".join(parts) if parts else "(no output)"


class KernelIsolation(BaseModel):
    """Which kernel layers this machine gives the sandbox (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    namespaces: bool
    seccomp: bool
    detail: str
    tmpfs: bool = False  # the sandbox directory can be a size-limited tmpfs (kernel disk quota)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _mount_attr(set_flags: int, clear_flags: int) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(struct.pack("QQQQ", set_flags, clear_flags, 0, 0), 32)


def _namespace_setup(root: str, disk_bytes: int | None = None) -> Callable[[], None]:
    """The part of preexec_fn that enters new network and mount namespaces. Everything it needs
    is prepared here, in the parent: between fork and exec nothing may import or lock.

    With `disk_bytes`, the sandbox directory becomes a fresh tmpfs of that size in the new
    namespace (its files are gone when the run ends); without, a bind mount of itself. Either
    way it is writable, noexec, nosuid and nodev."""
    libc = _libc()
    flags = CLONE_NEWNET | CLONE_NEWNS | (CLONE_NEWUSER if os.geteuid() != 0 else 0)
    root_b = os.fsencode(root)
    read_only = _mount_attr(MOUNT_ATTR_RDONLY, 0)
    # noexec: a .so the code writes here cannot be mmapped executable, so dlopen fails.
    writable = _mount_attr(
        MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MOUNT_ATTR_RDONLY
    )
    long = ctypes.c_long
    tmpfs_options = None if disk_bytes is None else f"size={disk_bytes},mode=0700".encode()

    def check(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def setup() -> None:
        check(libc.unshare(flags), "unshare")
        check(libc.mount(None, b"/", None, long(MS_REC | MS_PRIVATE), None), "mount private")
        if tmpfs_options is None:
            check(libc.mount(root_b, root_b, None, long(MS_BIND | MS_REC), None), "bind sandbox")
        else:
            tmpfs_flags = long(MS_NOSUID | MS_NODEV | MS_NOEXEC)
            check(libc.mount(b"tmpfs", root_b, b"tmpfs", tmpfs_flags, tmpfs_options), "tmpfs")
        for path, recursive, attr in ((b"/", AT_RECURSIVE, read_only), (root_b, 0, writable)):
            check(
                libc.syscall(long(SYS_MOUNT_SETATTR), long(AT_FDCWD), path, long(recursive), attr,
                             long(32)),
                "mount_setattr",
            )  # fmt: skip
        # Popen changed directory before this ran: re-enter so cwd is on the writable mount.
        os.chdir(root_b)

    return setup


@functools.cache
def kernel_isolation() -> KernelIsolation:
    """Probe, once per process, whether namespaces and the seccomp filter work here."""
    notes = []
    with tempfile.TemporaryDirectory(prefix="agentic-sandbox-probe-") as tmp:
        try:
            subprocess.run(
                [sys.executable, "-I", "-c", "pass"],
                preexec_fn=_namespace_setup(os.path.realpath(tmp)),
                check=True,
                capture_output=True,
                timeout=30,
            )
            namespaces = True
        except (OSError, subprocess.SubprocessError) as exc:
            namespaces = False
            notes.append(f"namespaces unavailable ({exc})")
        tmpfs = False
        if namespaces:
            # A write, not just the mount: in a user namespace without a uid map the mount can
            # succeed and file creation still fail.
            try:
                subprocess.run(
                    [sys.executable, "-I", "-c", "open('probe', 'w').write('x')"],
                    preexec_fn=_namespace_setup(os.path.realpath(tmp), 1 << 20),
                    cwd=tmp,
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
                tmpfs = True
            except (OSError, subprocess.SubprocessError) as exc:
                notes.append(f"tmpfs disk quota unavailable, using a watchdog ({exc})")
        r, w = os.pipe()
        config = {"root": tmp, "readable": [], "status_fd": w, "seccomp": True}
        try:
            probe = subprocess.run(
                [sys.executable, "-I", CHILD_SCRIPT, json.dumps(config)],
                input=b"import os\ntry:\n    os.fork()\nexcept PermissionError:\n    pass\n",
                capture_output=True,
                pass_fds=(w,),
                timeout=30,
            )
            seccomp = probe.returncode == 0
            if not seccomp:
                notes.append(f"seccomp unavailable ({probe.stderr.decode()[-200:].strip()})")
        finally:
            os.close(r)
            os.close(w)
    return KernelIsolation(
        namespaces=namespaces, seccomp=seccomp, tmpfs=tmpfs, detail="; ".join(notes)
    )


def _tasks_of_current_user() -> int:
    """Processes and threads of this real uid: RLIMIT_NPROC counts all of them."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


async def _read_capped(stream: asyncio.StreamReader, max_chars: int) -> str:
    """Read to EOF, keep the first `max_chars` characters, say how much was dropped."""
    kept = bytearray()
    dropped = 0
    while chunk := await stream.read(65536):
        room = max_chars * 4 - len(kept)  # UTF-8: at most 4 bytes per character
        kept += chunk[: max(room, 0)]
        dropped += max(len(chunk) - max(room, 0), 0)
    text = kept.decode("utf-8", errors="replace")
    if len(text) > max_chars:
        dropped += len(text[max_chars:].encode())
        text = text[:max_chars]
    return text + (f"\n[... output truncated: {dropped} more bytes]" if dropped else "")


def _disk_use(root: str) -> int:
    """Bytes of disk the tree under `root` occupies (allocated blocks, so sparse files count
    what they really use), without following symlinks."""
    total, pending = 0, [root]
    while pending:
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
    return total


def _read_status(fd: int) -> list[dict[str, object]]:
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    lines = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            item = json.loads(line)
            if isinstance(item, dict):
                lines.append(item)
    return lines


class PythonSandbox:
    """Runs Python code in a contained subprocess; see the module docstring for the layers."""

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        memory_mb: int = 256,
        max_output_chars: int = 4000,
        file_size_mb: int = 16,
        disk_mb: int = 64,
        max_open_files: int = 256,
        readable: Sequence[str | Path] = (),
        require_kernel_isolation: bool = False,
    ) -> None:
        for field, value, low in (
            ("timeout_s", timeout_s, 0),
            ("memory_mb", memory_mb, 32),
            ("max_output_chars", max_output_chars, 1),
            ("file_size_mb", file_size_mb, 1),
            ("disk_mb", disk_mb, 1),
            ("max_open_files", max_open_files, 16),
        ):
            if not value >= low or (field == "timeout_s" and value == 0):
                raise ConfigError(f"PythonSandbox {field} must be >= {low}, got {value!r}")
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self.file_size_mb = file_size_mb
        self.disk_mb = disk_mb
        self.max_open_files = max_open_files
        self.readable = [os.path.realpath(p) for p in readable]
        self.isolation = kernel_isolation()
        if require_kernel_isolation and not (self.isolation.namespaces and self.isolation.seccomp):
            raise ConfigError(f"kernel isolation required but missing: {self.isolation.detail}")

    def _limits(self) -> list[tuple[int, int]]:
        cpu = int(self.timeout_s) + 2  # a backstop: the wall clock normally ends the run first
        return [
            (resource.RLIMIT_AS, self.memory_mb << 20),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, self.file_size_mb << 20),
            (resource.RLIMIT_NOFILE, self.max_open_files),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NPROC, _tasks_of_current_user() + 32),
        ]

    def _preexec(self, root: str) -> Callable[[], None]:
        limits = self._limits()
        disk = (self.disk_mb << 20) if self.isolation.tmpfs else None
        namespaces = _namespace_setup(root, disk) if self.isolation.namespaces else None
        setrlimit = resource.setrlimit

        def preexec() -> None:
            for which, value in limits:
                setrlimit(which, (value, value))
            if namespaces is not None:
                namespaces()

        return preexec

    async def run(self, code: str) -> SandboxResult:
        """Run `code` and report what happened; never raises for anything the code does."""
        start = time.perf_counter()
        # realpath: the child compares resolved paths against this root
        root = os.path.realpath(tempfile.mkdtemp(prefix="agentic-sandbox-"))  # noqa: ASYNC240
        status_r, status_w = os.pipe()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": root,
            "TMPDIR": root,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        config = {
            "root": root,
            "readable": [*SYSTEM_READABLE, *self.readable],
            "status_fd": status_w,
            "seccomp": self.isolation.seccomp,
        }
        proc = None
        timed_out = over_quota = False
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-I", "-X", "utf8", CHILD_SCRIPT, json.dumps(config)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=root,
                    env=env,
                    start_new_session=True,
                    preexec_fn=self._preexec(root),
                    pass_fds=(status_w,),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return self._result("", "", None, False, f"sandbox failed to start: {exc}", start)
            finally:
                os.close(status_w)
            assert proc.stdin and proc.stdout and proc.stderr
            out = asyncio.ensure_future(_read_capped(proc.stdout, self.max_output_chars))
            err = asyncio.ensure_future(_read_capped(proc.stderr, self.max_output_chars))
            watchdog = None if self.isolation.tmpfs else asyncio.ensure_future(self._watch(root))
            try:
                async with asyncio.timeout(self.timeout_s):
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        proc.stdin.write(code.encode("utf-8", errors="surrogateescape"))
                        await proc.stdin.drain()
                        proc.stdin.close()
                    if watchdog is None:
                        await proc.wait()
                    else:
                        waiter = asyncio.ensure_future(proc.wait())
                        await asyncio.wait({waiter, watchdog}, return_when="FIRST_COMPLETED")
                        over_quota = watchdog.done() and watchdog.result()
            except TimeoutError:
                timed_out = True
            finally:
                if watchdog is not None:
                    watchdog.cancel()
            self._kill(proc)
            await proc.wait()
            stdout, stderr = await asyncio.gather(out, err)
            status = _read_status(status_r)
            error = self._error(proc.returncode, timed_out, status, over_quota)
            return self._result(stdout, stderr, proc.returncode, timed_out, error, start)
        finally:
            if proc is not None and proc.returncode is None:
                self._kill(proc)  # cancelled: never leave the child behind
            os.close(status_r)
            shutil.rmtree(root, ignore_errors=True)

    async def _watch(self, root: str) -> bool:
        """Where the kernel gives no tmpfs quota: poll the directory's disk use; True (and the
        caller kills the run) once it passes `disk_mb`. Never returns False: it runs until the
        process ends and the caller cancels it."""
        limit = self.disk_mb << 20
        while True:
            if _disk_use(root) > limit:
                return True
            await asyncio.sleep(DISK_POLL_S)

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        # The child leads its own session and process group: kill the group, not just the pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _result(
        self,
        stdout: str,
        stderr: str,
        exit_code: int | None,
        timed_out: bool,
        error: str | None,
        start: float,
    ) -> SandboxResult:
        seconds = time.perf_counter() - start
        return SandboxResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=exit_code,
            timed_out=timed_out,
            error=error,
            seconds=seconds,
        )

    def _error(
        self,
        code: int | None,
        timed_out: bool,
        status: list[dict[str, object]],
        over_quota: bool = False,
    ) -> str | None:
        if timed_out:
            return f"timed out after {self.timeout_s:g} s"
        if over_quota:
            return f"disk quota of {self.disk_mb} MB exceeded"
        memory = code == EXIT_MEMORY and any(s.get("memory") for s in status)
        if memory or code == -signal.SIGKILL:
            return f"memory limit of {self.memory_mb} MB exceeded"
        if code == -signal.SIGXCPU:
            return f"CPU time limit of {int(self.timeout_s) + 2} s exceeded"
        # A refusal the code caught and recovered from (numpy's optional ctypes import) is
        # not an error; one that ended the run is the clearest account of why it failed.
        blocked = [s["blocked"] for s in status if "blocked" in s]
        if blocked and code:
            return f"blocked: {blocked[0]}"
        exceptions = [s["exception"] for s in status if "exception" in s]
        if exceptions and "[Errno 28]" in str(exceptions[0]):  # ENOSPC: the tmpfs quota is full
            return f"disk quota of {self.disk_mb} MB exceeded ({exceptions[0]})"
        if exceptions:
            return str(exceptions[0])
        if code is not None and code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        if code:
            return f"exited with code {code}"
        return None


def python_tool(
    *, timeout_s: float = 5.0, memory_mb: int = 256, max_output_chars: int = 4000
) -> Tool:
    """A `python` tool that runs code in a fresh `PythonSandbox` process per call."""
    sandbox = PythonSandbox(
        timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars
    )

    async def python(code: str) -> str:
        """Run a Python 3 program and return what it printed (stdout, then stderr).

        Each call starts a fresh interpreter in an empty temporary directory: no network,
        no subprocesses, files may be written only in the current directory, and time,
        memory and output are limited. Use print() to show results.

        Args:
            code: The complete Python program to run.
        """
        result = await sandbox.run(code)
        if result.error is not None:
            raise SandboxError(result.render())
        return result.render()

    # The sandbox enforces its own wall clock; the tool's timeout only backs it up.
    return Tool(python, name="python", timeout_s=timeout_s + 10)
