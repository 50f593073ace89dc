"""One sandboxed Python process: isolates itself, then runs ONE piece of code read from stdin.

Run as `python -I -S sandbox_worker.py '<json settings>'` (stdlib only: nothing of fullchain or
site-packages is importable in here). Before it reads any code it applies, in this order:

1. parent-death signal (SIGKILL when the agent process dies);
2. no network: a new, empty network namespace (`unshare(CLONE_NEWNET)`, as root; otherwise a new
   user + network namespace); where the kernel refuses both, Landlock's TCP rules deny every
   `connect`/`bind` instead (ABI >= 4). Which one held is printed in the ready line;
3. the working directory: its fresh temporary directory;
4. resource limits: RLIMIT_AS (memory), RLIMIT_NPROC (processes), RLIMIT_FSIZE (file size),
   RLIMIT_CORE 0; RLIMIT_CPU is set just before the code runs;
5. as root: drops to uid/gid 65534 (root ignores RLIMIT_NPROC) keeping only CAP_DAC_READ_SEARCH
   so it can still read the interpreter under /root — Landlock decides what it may read;
6. Landlock: read/execute only beneath the interpreter's stdlib and the system library dirs,
   read/write only beneath its own directory; nothing else on the filesystem; and (ABI >= 6)
   no signals to processes outside the sandbox.

Then it prints `READY <net mechanism>` and runs the code. Each worker runs one call and exits.
"""
import ctypes
import json
import os
import resource
import signal
import sys
import sysconfig

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_KEEPCAPS = 1, 38, 8
SYS_landlock_create_ruleset, SYS_landlock_add_rule, SYS_landlock_restrict_self = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
CAP_DAC_READ_SEARCH = 2
NOBODY = 65534

# Landlock filesystem rights (linux/landlock.h) and the ABI that introduced each.
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_ALL_V1 = (1 << 13) - 1
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def fail(what: str) -> None:
    errno = ctypes.get_errno()
    raise OSError(errno, f"sandbox: {what}: {os.strerror(errno)}")


def no_network() -> str:
    if libc.unshare(CLONE_NEWNET) == 0:
        return "netns"
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return "userns+netns"
    return "landlock-tcp"


def drop_root() -> None:
    """uid/gid 65534, capabilities: CAP_DAC_READ_SEARCH only (effective + permitted)."""
    if libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        fail("prctl(KEEPCAPS)")
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        fail("capset")


def landlock(readable: list, writable: str, deny_tcp: bool) -> int:
    abi = libc.syscall(SYS_landlock_create_ruleset, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        fail("Landlock is not available (kernel >= 5.13 with landlock in the lsm= list)")
    handled = FS_ALL_V1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0) | \
        (FS_IOCTL_DEV if abi >= 5 else 0)
    attr = RulesetAttr(handled, 0, 0)
    if deny_tcp:
        if abi < 4:
            raise OSError("sandbox: no network namespace permitted and Landlock ABI < 4 cannot "
                          "deny TCP: refusing to run without network isolation")
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    size = ctypes.sizeof(RulesetAttr) if abi >= 4 else 8
    ruleset = libc.syscall(SYS_landlock_create_ruleset, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        fail("landlock_create_ruleset")
    read_rights = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    rules = [(path, read_rights) for path in readable] + [(writable, handled)]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        if not os.path.isdir(path):  # a file rule takes only file rights
            rights &= FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
        rule = PathBeneathAttr(rights & handled, fd)
        if libc.syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                        ctypes.byref(rule), 0) != 0:
            fail(f"landlock_add_rule({path})")
        os.close(fd)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("prctl(NO_NEW_PRIVS)")
    if libc.syscall(SYS_landlock_restrict_self, ruleset, 0) != 0:
        fail("landlock_restrict_self")
    os.close(ruleset)
    return abi


def main() -> None:
    settings = json.loads(sys.argv[1])
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    net = no_network()
    workdir = settings["workdir"]
    os.chdir(workdir)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (settings["file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_AS, (settings["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (settings["nproc"],) * 2)
    if os.getuid() == 0:
        drop_root()
    paths = sysconfig.get_paths()
    readable = sorted({paths["stdlib"], paths["platstdlib"], "/usr/lib", "/lib", "/lib64",
                       "/usr/lib64", "/bin", "/usr/bin", "/dev/null", "/dev/urandom",
                       "/dev/zero", "/etc/ld.so.cache", "/etc/localtime"})
    landlock(readable, workdir, deny_tcp=net == "landlock-tcp")
    sys.stdout.write(f"READY {net}\n")
    sys.stdout.flush()
    code = sys.stdin.read()
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + settings["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(code, "<tool code>", "exec"), namespace)  # noqa: S102 - the sandboxed call
    except SystemExit:
        raise
    except BaseException as exc:  # the traceback of the tool code, without this file's frames
        import traceback

        sys.stdout.flush()
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        sys.exit(1)


if __name__ == "__main__":
    main()
