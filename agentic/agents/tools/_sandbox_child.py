"""The first code the sandboxed interpreter runs (stdlib only; see `sandbox.py` for the design).

Run as `python -I -X utf8 _sandbox_child.py CONFIG_JSON` with the user's code on stdin. It
locks the process down in two layers and then executes the code as `__main__`:

1. Kernel (x86-64 Linux): drop every capability, set no_new_privs, and install a seccomp
   filter that refuses process creation (fork, vfork, non-thread clone, execve), sockets,
   signals to other processes, namespace and mount changes, io_uring, ptrace and hard links.
2. Interpreter: an audit hook (PEP 578) that turns the same attempts, plus file writes outside
   the sandbox directory, reads outside the allowed directories and loading a native extension
   module from a file under the sandbox directory, into PermissionError (ImportError for
   imports) with a readable message, and reports each one on the status pipe for the parent.

The hook is built by a factory and uses only values captured at install time, so user code that
patches `os.path`, `builtins` or `socket` cannot change what the hook checks.
"""

from __future__ import annotations

import builtins
import json
import os
import platform
import posix
import signal
import stat
import struct
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

# Importing these names, or loading their files under another name, is refused after setup.
BLOCKED_MODULES = {
    "_ctypes": "native code (ctypes)",
    "ctypes": "native code (ctypes)",
    "_cffi_backend": "native code (cffi)",
    "cffi": "native code (cffi)",
    "_posixsubprocess": "process creation (subprocess)",
    "_posixshmem": "shared memory",
    "_multiprocessing": "process creation (multiprocessing)",
    "_xxsubinterpreters": "subinterpreters",
    "_xxinterpchannels": "subinterpreters",
    "_testcapi": "native test hooks",
    "_testinternalcapi": "native test hooks",
    "_dbm": "dbm files",
    "_gdbm": "dbm files",
    "readline": "readline",
}
PROCESS_EVENTS = {
    "os.fork",
    "os.forkpty",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "os.startfile",
    "subprocess.Popen",
    "pty.spawn",
}
NETWORK_PREFIXES = ("socket.", "urllib.", "http.", "ftplib.", "smtplib.", "syslog.", "webbrowser.")
NATIVE_PREFIXES = ("ctypes.", "sqlite3.enable_load_extension", "sqlite3.load_extension")
INTROSPECTION_EVENTS = {"gc.get_objects", "gc.get_referrers", "gc.get_referents"}
# Events whose first argument is a path that is written, and where dir_fd sits in `args`.
WRITE_EVENTS = {
    "os.remove": 1,
    "os.rmdir": 1,
    "os.mkdir": 2,
    "os.chmod": 2,
    "os.chown": 3,
    "os.utime": 3,
    "os.truncate": None,
    "os.setxattr": None,
    "os.removexattr": None,
    "shutil.rmtree": 1,
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
EXIT_MEMORY = 120

# x86-64 system call numbers (asm/unistd_64.h) for the seccomp filter.
X86_64 = {
    "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone": 56, "clone3": 435,
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "socket": 41, "socketpair": 53,
    "setsid": 112, "setpgid": 109, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
    "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "reboot": 169, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "swapon": 167, "swapoff": 168, "mknod": 133, "mknodat": 259, "link": 86, "linkat": 265,
}  # fmt: skip
SELF_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
CLONE_THREAD = 0x00010000
EPERM, ENOSYS = 1, 38
RET_ALLOW, RET_KILL, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF opcodes (W size, K source)


def seccomp_program(pid: int) -> bytes:
    """A classic-BPF seccomp filter (deny-list, default allow) as packed sock_filter structs."""
    ops: list[tuple[int, int, int, int]] = []

    def deny(nr: int, errno: int = EPERM) -> None:
        ops.extend([(JEQ, 0, 1, nr), (RET, 0, 0, RET_ERRNO | errno)])

    ops.append((LD_ABS, 0, 0, 4))  # seccomp_data.arch
    ops.append((JEQ, 1, 0, AUDIT_ARCH_X86_64))
    ops.append((RET, 0, 0, RET_KILL))
    ops.append((LD_ABS, 0, 0, 0))  # seccomp_data.nr
    ops.extend([(JGE, 0, 1, X32_SYSCALL_BIT), (RET, 0, 0, RET_ERRNO | EPERM)])
    # clone3 gets ENOSYS so glibc falls back to clone, whose flags the filter can read.
    deny(X86_64["clone3"], ENOSYS)
    # clone: threads (CLONE_THREAD) pass, new processes do not. args[0] low word at offset 16.
    ops.extend(
        [
            (JEQ, 0, 4, X86_64["clone"]),
            (LD_ABS, 0, 0, 16),
            (JSET, 0, 1, CLONE_THREAD),
            (RET, 0, 0, RET_ALLOW),
            (RET, 0, 0, RET_ERRNO | EPERM),
        ]
    )
    for name in SELF_ONLY:  # signals only to this very process (args[0] == pid)
        ops.extend(
            [
                (JEQ, 0, 4, X86_64[name]),
                (LD_ABS, 0, 0, 16),
                (JEQ, 0, 1, pid),
                (RET, 0, 0, RET_ALLOW),
                (RET, 0, 0, RET_ERRNO | EPERM),
            ]
        )
    for name, nr in X86_64.items():
        if name not in SELF_ONLY and name not in ("clone", "clone3"):
            deny(nr)
    ops.append((RET, 0, 0, RET_ALLOW))
    return b"".join(struct.pack("HBBI", *op) for op in ops)


def lock_down_kernel() -> None:
    """Capabilities to zero, no_new_privs, seccomp. Raises OSError if the kernel refuses."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    libc.prctl.argtypes = [ctypes.c_int, ulong, ulong, ulong, ulong]
    libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

    def check(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"sandbox setup: {what}: {os.strerror(errno)}")

    # capset(version 3, this process) with empty effective/permitted/inheritable sets
    header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0))
    data = ctypes.create_string_buffer(bytes(24))
    check(libc.capset(header, data), "capset")
    check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    program = seccomp_program(os.getpid())
    filters = ctypes.create_string_buffer(program)
    fprog = ctypes.create_string_buffer(
        struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
    )
    check(libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0), "PR_SET_SECCOMP")
    for name in ("ctypes", "ctypes._endian", "_ctypes"):
        sys.modules.pop(name, None)


def make_hook(
    root: str, readable: list[str], status_fd: int
) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook. Every name it uses is a local captured here, never a global lookup."""
    _lstat, _readlink, _getcwd, _write = posix.lstat, posix.readlink, posix.getcwd, posix.write
    _S_ISLNK, _S_ISDIR = stat.S_ISLNK, stat.S_ISDIR
    _isinstance, _str, _bytes, _int, _len = builtins.isinstance, str, bytes, int, builtins.len
    _OSError, _PermissionError, _ImportError = OSError, PermissionError, ImportError
    _fspath, _getpid = os.fspath, os.getpid
    _dumps = json.dumps
    write_flags = WRITE_FLAGS
    network_prefixes, native_prefixes = NETWORK_PREFIXES, NATIVE_PREFIXES
    introspection_events = frozenset(INTROSPECTION_EVENTS)
    no_follow = frozenset({"os.remove", "os.rmdir", "shutil.rmtree"})
    root_slash = root + "/"
    readable_roots = tuple(r.rstrip("/") + "/" for r in readable)
    readable_exact = frozenset(readable) | {root}
    blocked_modules = dict(BLOCKED_MODULES)
    process_events = frozenset(PROCESS_EVENTS)
    write_events = dict(WRITE_EVENTS)
    reported = [0]

    def block(message: str, error: type[Exception] = _PermissionError) -> None:
        if reported[0] < 20:  # the pipe must never fill up and block the child
            reported[0] += 1
            try:
                _write(status_fd, (_dumps({"blocked": message}) + "\n").encode())
            except _OSError:
                pass
        raise error(f"blocked: {message}")

    def realpath(path: str, follow_last: bool = True) -> str:
        """Symlinks resolved component by component, like posixpath.realpath(strict=False)."""
        if not path.startswith("/"):
            path = _getcwd() + "/" + path
        pending = [part for part in path.split("/") if part][::-1]
        resolved, hops = "", 0
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                resolved = resolved.rpartition("/")[0]
                continue
            candidate = resolved + "/" + name
            try:
                mode = _lstat(candidate).st_mode
            except _OSError:
                resolved = candidate
                continue
            if not _S_ISLNK(mode) or (not pending and not follow_last):
                resolved = candidate
                continue
            hops += 1
            if hops > 40:
                block(f"symlink loop: {path}")
            target = _readlink(candidate)
            if target.startswith("/"):
                resolved = ""
            pending.extend([part for part in target.split("/") if part][::-1])
        return resolved or "/"

    def resolve(path: Any, dir_fd: Any = None, follow_last: bool = True) -> str:
        if _isinstance(path, _int):
            return _readlink(f"/proc/self/fd/{path}")
        if path is None:
            path = "."
        text = _fspath(path)
        if _isinstance(text, _bytes):
            text = text.decode("utf-8", "surrogateescape")
        if _isinstance(dir_fd, _int) and dir_fd >= 0 and not text.startswith("/"):
            text = _readlink(f"/proc/self/fd/{dir_fd}") + "/" + text
        return realpath(text, follow_last)

    def inside(path: str) -> bool:
        return path == root or path.startswith(root_slash)

    def may_read(path: str) -> bool:
        return inside(path) or path in readable_exact or path.startswith(readable_roots)

    def check_write(path: Any, dir_fd: Any = None, follow_last: bool = True) -> None:
        real = resolve(path, dir_fd, follow_last)
        if not inside(real):
            block(f"write outside the sandbox directory: {real}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or _isinstance(path, _int):
                return
            writes = _isinstance(mode, _str) and ("w" in mode or "a" in mode or "x" in mode)
            if (flags or 0) & write_flags or writes or (_isinstance(mode, _str) and "+" in mode):
                check_write(path)
                return
            real = resolve(path)
            if not may_read(real):
                block(f"read outside the allowed directories: {real}")
            # A directory fd outside would let dir_fd-relative calls escape the checks.
            if not inside(real) and mode is None:
                try:
                    is_dir = _S_ISDIR(_lstat(real).st_mode)
                except _OSError:
                    is_dir = False
                if is_dir:
                    block(f"opening a directory outside the sandbox: {real}")
        elif event in write_events:
            index = write_events[event]
            dir_fd = args[index] if index is not None and _len(args) > index else None
            check_write(args[0], dir_fd, follow_last=event not in no_follow)
        elif event == "os.rename":
            check_write(args[0], args[2], follow_last=False)
            check_write(args[1], args[3], follow_last=False)
        elif event == "os.symlink":
            target, link, dir_fd = args
            check_write(link, dir_fd, follow_last=False)
            text = _fspath(target)
            text = text.decode() if _isinstance(text, _bytes) else text
            # Relative targets could point outside once their directory is moved.
            if not (text.startswith(root_slash) and "/.." not in text):
                block(f"symlink to a target outside the sandbox directory: {text}")
        elif event == "os.link":
            block("hard links")
        elif event in ("os.listdir", "os.scandir", "os.chdir"):
            real = resolve(args[0] if args else None)
            if event == "os.chdir" and not inside(real):
                block(f"chdir outside the sandbox directory: {real}")
            if not may_read(real):
                block(f"read outside the allowed directories: {real}")
        elif event == "import":
            name = args[0]
            filename = args[1]
            # Only the extension-module loader passes a file name: the code wrote that .so
            # itself (the mount is noexec too, where the kernel layer exists).
            if filename:
                real = resolve(filename)
                if inside(real):
                    block(f"native extension from the sandbox directory: {real}", _ImportError)
            base = filename.rpartition("/")[2].partition(".")[0] if filename else ""
            for key in (name, name.partition(".")[0], base):
                if key in blocked_modules:
                    # ImportError: libraries that import ctypes optionally (numpy) carry on
                    block(blocked_modules[key], _ImportError)
        elif event in process_events:
            block(f"process creation ({event})")
        elif event.startswith(network_prefixes):
            block("network access")
        elif event.startswith(native_prefixes):
            block(f"native code ({event})")
        elif event in ("os.kill", "os.killpg"):
            if event == "os.killpg" or args[0] != _getpid():
                block("signals to other processes")
        elif event in ("resource.setrlimit", "resource.prlimit"):
            block("changing resource limits")
        elif event == "sqlite3.connect":
            database = args[0]
            if database not in (":memory:", b":memory:", "", b""):
                check_write(database)
        elif event in introspection_events:
            block(f"heap introspection ({event})")

    return hook


def report(status_fd: int, **fields: Any) -> None:
    try:
        os.write(status_fd, (json.dumps(fields) + "\n").encode())
    except OSError:
        pass


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.argv[:] = ["<sandbox>"]
    status_fd: int = config["status_fd"]
    os.set_blocking(status_fd, False)
    code = sys.stdin.read()
    sys.stdin = open(os.devnull)  # input() sees end of file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large file is an OSError, not death
    sys.dont_write_bytecode = True  # no .pyc writes next to read-only sources
    # subprocess stays importable, but the module it forks with is unlinked; the audit hook
    # refuses a fresh import of it, and seccomp refuses the fork itself.
    subprocess._posixsubprocess = types.SimpleNamespace()  # type: ignore[attr-defined]
    sys.modules.pop("_posixsubprocess", None)
    if config["seccomp"]:
        if platform.machine() != "x86_64":
            raise OSError("sandbox setup: seccomp filter is only written for x86-64")
        lock_down_kernel()
    prefixes = [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix, f"/proc/{os.getpid()}"]
    readable = [*config["readable"], *(os.path.realpath(p) for p in prefixes if p), __file__]
    sys.addaudithook(make_hook(config["root"], readable, status_fd))

    reserve = bytearray(1 << 20)  # freed on MemoryError so the report itself can allocate
    main_module = types.ModuleType("__main__")
    main_module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main_module
    try:
        exec(compile(code, "<sandbox>", "exec"), main_module.__dict__)
    except MemoryError:
        del reserve
        main_module.__dict__.clear()
        report(status_fd, memory=True)
        print("MemoryError", file=sys.stderr)
        sys.exit(EXIT_MEMORY)
    except SystemExit:
        raise
    except BaseException as exc:
        # The user's frames only: this file's frames (main, the audit hook) are noise to them.
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
        lines += traceback.format_exception_only(type(exc), exc)
        print("".join(lines), end="", file=sys.stderr)
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        report(status_fd, exception=message.splitlines()[-1] if message else type(exc).__name__)
        sys.exit(1)


if __name__ == "__main__":
    main()
