"""The ctypes layer: library lookup, one method per driver_<op>, errors, Task,
ExecSession."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import enum
import errno
import io
import atexit
import json
import logging
import os
import selectors
import threading
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

JSON = Dict[str, Any]

_OPS = (
    "configure",
    "fingerprint",
    "start",
    "wait",
    "stop",
    "destroy",
    "inspect",
    "stats",
    "signal",
    "recover",
    "exec",
    "exec_wait",
    "exec_resize",
    "logs",
)


class Status(enum.IntEnum):
    """DriverStatus (include/execdriver.h)."""

    OK = 0
    INVALID = 1
    NOT_FOUND = 2
    TIMEOUT = 3
    UNSUPPORTED = 4
    ARTIFACT = 5
    START = 6
    CONFLICT = 7
    INTERNAL = 8


class DriverError(Exception):
    """A driver call returned a status other than DRIVER_OK.

    `.status` is the DriverStatus (an int), `.code` the error code string (e.g.
    "invalid_config"), `.field` the JSON path of the offending input or None,
    `.message` the driver's message, `.response` the whole error object."""

    status: int = -1

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: Optional[str] = None,
        response: Optional[JSON] = None,
    ) -> None:
        """Made by Driver.call from a failed call's status and error object; `response`
        is that whole object ({} when there was none)."""
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.response = response if response is not None else {}
        where = " (field %s)" % field if field else ""
        super().__init__("%s: %s%s" % (code, message, where))


class InvalidError(DriverError):
    """DRIVER_INVALID: invalid_json, invalid_request, invalid_config."""


class NotFoundError(DriverError):
    """DRIVER_NOT_FOUND: task_not_found."""


class DriverTimeout(DriverError, TimeoutError):
    """DRIVER_TIMEOUT: the task is still running when the timeout passed (also a
    built-in TimeoutError)."""


class UnsupportedError(DriverError):
    """DRIVER_UNSUPPORTED: e.g. an exec task without root or cgroups."""


class ArtifactError(DriverError):
    """DRIVER_ARTIFACT: artifact_download, _checksum, _unpack, _limit, _denied."""


class StartError(DriverError):
    """DRIVER_START: command_not_found, user_not_found, isolation, spawn."""


class ConflictError(DriverError):
    """DRIVER_CONFLICT: task_exists, task_running."""


class InternalError(DriverError):
    """DRIVER_INTERNAL: a caught panic or a bug (also: an unknown status)."""


_ERRORS: Dict[int, Type[DriverError]] = {
    Status.INVALID: InvalidError,
    Status.NOT_FOUND: NotFoundError,
    Status.TIMEOUT: DriverTimeout,
    Status.UNSUPPORTED: UnsupportedError,
    Status.ARTIFACT: ArtifactError,
    Status.START: StartError,
    Status.CONFLICT: ConflictError,
    Status.INTERNAL: InternalError,
}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _ms(timeout: Optional[float], timeout_ms: Optional[int]) -> Optional[int]:
    """A timeout in milliseconds from seconds (`timeout`, a float) or `timeout_ms`."""
    if timeout is not None and timeout_ms is not None:
        raise TypeError("give timeout (seconds) or timeout_ms, not both")
    if timeout is not None:
        return -1 if timeout < 0 else int(round(timeout * 1000))
    return timeout_ms


def _follow_ms(follow: Union[bool, float, None], follow_ms: Optional[int]) -> int:
    """How long a driver_logs call may wait for more, in ms: `follow_ms` if given, else
    `follow` seconds (a float; True is 1 s, None or False 0)."""
    if follow_ms is not None:
        if follow is not None and not isinstance(follow, bool):
            raise TypeError("give follow (seconds) or follow_ms, not both")
        return follow_ms
    if follow is None or follow is False:
        return 0
    if follow is True:
        return 1000
    if follow < 0:
        raise ValueError("follow must be >= 0 seconds, not %r" % follow)
    return int(round(follow * 1000))


class LogChunk(NamedTuple):
    """One driver_logs answer: `data` (the bytes, decoded from base64), `start` (the
    stream offset where they begin: later than asked when older bytes were rotated out),
    `offset` (where the next read goes on from) and `eof` (the task has ended and
    everything up to its end has been returned)."""

    data: bytes
    start: int
    offset: int
    eof: bool


class ExecExit(NamedTuple):
    """How the command of an ExecSession ended (driver_exec_wait): `exit_code` (128+N
    for a death by signal N, -1 when it could not be known) and `signal` (N, else 0)."""

    exit_code: int
    signal: int


def find_library(path: Optional[str] = None) -> str:
    """The library path: `path`, else $EXECDRIVER_LIB, else libexecdriver.so in this
    package's directory (where the wheel puts it, beside execdriver-shim), else
    "libexecdriver.so" (the dynamic loader's search path)."""
    if path:
        return str(path)
    env = os.environ.get("EXECDRIVER_LIB")
    if env:
        return env
    bundled = os.path.join(_PACKAGE_DIR, "libexecdriver.so")
    if os.path.exists(bundled):
        return bundled
    return "libexecdriver.so"


_LOCK = threading.Lock()
_LIBS: Dict[str, ctypes.CDLL] = {}

# DriverLogCallback: void (*)(void *user_data, int32_t level, const char *message).
_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p)
#: The library's log levels by DriverLogLevel number (driver_set_log_callback).
LOG_LEVELS = ("off", "error", "warn", "info", "debug", "trace")
#: `logging` levels of the library's (trace is below DEBUG).
_PY_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: 5}
# The ctypes callback in force per library: it must live while the library may call it.
_CALLBACKS: Dict[str, Any] = {}
_FLUSH_AT_EXIT: List[bool] = []


def _flush_logs() -> None:
    # Records still queued reach their callback before the interpreter goes away, and
    # none is delivered afterwards.
    for path in list(_CALLBACKS):
        lib = _LIBS.get(path)
        if lib is not None:
            lib.driver_set_log_callback(0, _LOG_CALLBACK(), None)
    _CALLBACKS.clear()


def _load(path: str) -> ctypes.CDLL:
    # One CDLL per path: a Rust cdylib is never unloaded, and the library keeps one task
    # table per process however many Driver objects use it.
    with _LOCK:
        lib = _LIBS.get(path)
        if lib is not None:
            return lib
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            hint = ""
            if path == "libexecdriver.so":
                hint = (
                    "; this package has no library inside (installed from source?): "
                    "build the wheel with `python3 python/build_wheel.py`, or point at a "
                    "built one (target/debug/libexecdriver.so after `cargo build`)"
                )
            raise OSError(
                "cannot load %s (%s); pass Driver(path=...) or set EXECDRIVER_LIB%s"
                % (path, e, hint)
            ) from e
        lib.driver_abi_version.restype = ctypes.c_uint32
        lib.driver_abi_version.argtypes = []
        lib.driver_version.restype = ctypes.c_char_p  # static: never freed
        lib.driver_version.argtypes = []
        # c_void_p, not c_char_p: we need the pointer itself to free it.
        lib.driver_free.restype = None
        lib.driver_free.argtypes = [ctypes.c_void_p]
        for op in _OPS:
            f = getattr(lib, "driver_" + op)
            f.restype = ctypes.c_int32
            f.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.driver_set_log_callback.restype = ctypes.c_int32
        lib.driver_set_log_callback.argtypes = [ctypes.c_int32, _LOG_CALLBACK, ctypes.c_void_p]
        abi = lib.driver_abi_version()
        if abi != 1:
            raise OSError("%s has C ABI %d; this package speaks 1" % (path, abi))
        _LIBS[path] = lib
        return lib


Request = Union[Mapping[str, Any], str, bytes, None]


class Driver:
    """A handle on libexecdriver.so. Cheap to create; safe to share between threads."""

    def __init__(self, path: Optional[str] = None) -> None:
        """Loads the library (once per path and process; every Driver of one path
        shares its task table): `path`, else $EXECDRIVER_LIB, else libexecdriver.so in
        this package's directory (where the wheel puts it, beside execdriver-shim), else
        "libexecdriver.so" from the dynamic loader's search path (see find_library).
        Raises OSError, naming what to do, when it cannot be loaded (a package installed
        from source, `pip install ./python`, holds no library), or when its C ABI is not
        1. The library then runs $EXECDRIVER_SHIM, else the execdriver-shim beside it,
        else <libdir>/../libexec/execdriver/execdriver-shim (an install's)."""
        self.path: str = find_library(path)
        self._lib = _load(self.path)

    # -- the raw call ---------------------------------------------------------------

    def call(self, op: str, request: Request = None) -> JSON:
        """Calls driver_<op> with a dict (JSON-encoded), str/bytes JSON, or None (NULL).
        Returns the response dict; raises the DriverError subclass for a non-OK status.
        The response is always released with driver_free."""
        if op not in _OPS:
            raise ValueError("unknown operation %r" % op)
        if request is None:
            raw: Optional[bytes] = None
        elif isinstance(request, bytes):
            raw = request
        elif isinstance(request, str):
            raw = request.encode()
        else:
            raw = json.dumps(dict(request)).encode()
        out = ctypes.c_void_p()
        status = getattr(self._lib, "driver_" + op)(raw, ctypes.byref(out))
        try:
            text = ctypes.string_at(out.value).decode() if out.value else "{}"
        finally:
            self._lib.driver_free(out)
        resp: JSON = json.loads(text)
        if status == Status.OK:
            return resp
        err = resp.get("error") or {}
        cls = _ERRORS.get(status, InternalError)
        raise cls(
            int(status),
            err.get("code", "internal"),
            err.get("message", "status %d without an error object" % status),
            err.get("field"),
            resp,
        )

    # -- library info -----------------------------------------------------------------

    def abi_version(self) -> int:
        """The C ABI version of the loaded library (1)."""
        return int(self._lib.driver_abi_version())

    def version(self) -> str:
        """The loaded library's version, e.g. "0.1.0"."""
        return self._lib.driver_version().decode()

    # -- the library's own log ------------------------------------------------------------

    def set_log_callback(
        self, callback: Optional[Callable[[str, str], None]], level: str = "info"
    ) -> None:
        """Hands the library's own log records of `level` ("error", "warn", "info",
        "debug", "trace") and more severe to `callback(level, message)`; None removes it.
        The callback runs on a thread of the library's, one record at a time, in order,
        shortly after each happened; it may call the Driver's methods, and what it
        raises is printed and dropped. This returns once every earlier record has been
        delivered to the previous callback (removing it flushes; the package does so at
        interpreter exit). The file of configure()'s `log_path` is the other sink."""
        if level not in LOG_LEVELS:
            raise ValueError("level must be one of %s, not %r" % (", ".join(LOG_LEVELS), level))
        if callback is None:
            func = _LOG_CALLBACK()
            n = 0
        else:
            user = callback

            def deliver(_user_data: Any, lvl: int, message: bytes) -> None:
                name = LOG_LEVELS[lvl] if 0 <= lvl < len(LOG_LEVELS) else str(lvl)
                user(name, message.decode("utf-8", "replace"))

            func = _LOG_CALLBACK(deliver)
            n = LOG_LEVELS.index(level)
        with _LOCK:
            status = self._lib.driver_set_log_callback(n, func, None)
            if status != Status.OK:
                raise InvalidError(status, "invalid_request",
                                   "driver_set_log_callback refused it (from inside the callback?)",
                                   None, {})
            if callback is None:
                _CALLBACKS.pop(self.path, None)
            else:
                if not _FLUSH_AT_EXIT:
                    atexit.register(_flush_logs)
                    _FLUSH_AT_EXIT.append(True)
                _CALLBACKS[self.path] = func

    def log_to(self, logger: Optional[logging.Logger] = None, level: str = "info") -> None:
        """set_log_callback() into a `logging.Logger` (default: logging.getLogger(
        "execdriver")): error, warn, info, debug map to ERROR, WARNING, INFO, DEBUG;
        trace to level 5."""
        log = logger if logger is not None else logging.getLogger("execdriver")
        levels = {name: _PY_LEVELS.get(i, logging.INFO) for i, name in enumerate(LOG_LEVELS)}
        self.set_log_callback(lambda lvl, msg: log.log(levels[lvl], "%s", msg), level)

    # -- one method per operation ------------------------------------------------------

    def configure(self, config: Optional[Mapping[str, Any]] = None) -> JSON:
        """Sets the plugin configuration (None: returns the current one)."""
        return self.call("configure", config)

    def fingerprint(self) -> JSON:
        """What this host can run: {health, health_description, attributes}."""
        return self.call("fingerprint")

    def start(self, task: Mapping[str, Any], wait_fd: bool = False) -> JSON:
        """Starts a task; returns {task_id, pid, task_dir, started_at, handle}.

        With `wait_fd` the response also has "wait_fd": a file descriptor that is now the
        caller's to close, readable (poll it, do not read it) once the task's exit is
        known; wait(timeout_ms=0) then returns the exit. start_task() manages it for you.
        """
        if wait_fd:
            task = dict(task, wait_fd=True)
        return self.call("start", task)

    def wait(
        self,
        task_id: str,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """The task's exit: {exit_code, signal, oom_killed, err, ...}. Waits up to
        `timeout` seconds (or `timeout_ms`; neither: forever, 0: poll); raises
        DriverTimeout (a TimeoutError) while the task still runs then."""
        req: JSON = {"task_id": task_id}
        ms = _ms(timeout, timeout_ms)
        if ms is not None:
            req["timeout_ms"] = ms
        return self.call("wait", req)

    def stop(
        self,
        task_id: str,
        signal: Union[str, int, None] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """Sends `signal` (default: the task's kill_signal), waits up to `timeout` seconds
        (or `timeout_ms`; default: the task's kill_timeout_ms), then kills what is left;
        returns the exit, as wait() does."""
        req: JSON = {"task_id": task_id}
        if signal is not None:
            req["signal"] = signal
        ms = _ms(timeout, timeout_ms)
        if ms is not None:
            req["timeout_ms"] = ms
        return self.call("stop", req)

    def destroy(self, task_id: str, force: bool = False, purge: bool = False) -> JSON:
        """Forgets an exited task and removes its state (`force`: a running one is
        killed first, else ConflictError; `purge`: its task dir goes too)."""
        return self.call("destroy", {"task_id": task_id, "force": force, "purge": purge})

    def inspect(self, task_id: str) -> JSON:
        """The task's state, pid, handle, artifacts and exit once it has one."""
        return self.call("inspect", {"task_id": task_id})

    def stats(self, task_id: str) -> JSON:
        """The task's resource use now (cpu, memory, pids)."""
        return self.call("stats", {"task_id": task_id})

    def signal(self, task_id: str, signal: Union[str, int]) -> JSON:
        """Sends `signal` (a name such as "SIGHUP", or a number) to the task's command."""
        return self.call("signal", {"task_id": task_id, "signal": signal})

    def recover(self, handle: Mapping[str, Any], wait_fd: bool = False) -> JSON:
        """Re-registers a task from the handle driver_start returned (after a restart);
        returns {task_id, recovered, state}.

        With `wait_fd` the response also has "wait_fd", the caller's to close: a pidfd of
        the task's supervisor while it runs (poll it; reading a pidfd fails), or an fd
        readable at once when the task is over."""
        req: JSON = {"handle": dict(handle)}
        if wait_fd:
            req["wait_fd"] = True
        return self.call("recover", req)

    def logs(
        self,
        task_id: str,
        stream: str = "stdout",
        offset: int = 0,
        origin: str = "start",
        limit_bytes: Optional[int] = None,
        follow_ms: Optional[int] = None,
        follow: Union[bool, float, None] = None,
    ) -> LogChunk:
        """Reads the task's `stream` ("stdout" or "stderr") across its rotated files:
        up to `limit_bytes` (library default 64 KiB, at most 1 MiB) from `offset` bytes
        after the stream's start (`origin="start"`) or before its current end
        (`origin="end"`). With `follow` seconds (a float; True is 1 s) or `follow_ms`
        > 0, a read that finds nothing new waits up to that long (at most 60 s) for
        more while the task runs, blocking the calling thread. Returns a LogChunk (exact
        bytes)."""
        req: JSON = {
            "task_id": task_id,
            "stream": stream,
            "offset": offset,
            "origin": origin,
            "follow_ms": _follow_ms(follow, follow_ms),
        }
        if limit_bytes is not None:
            req["limit_bytes"] = limit_bytes
        r = self.call("logs", req)
        return LogChunk(base64.b64decode(r["data"]), r["start"], r["offset"], r["eof"])

    def exec(
        self,
        task_id: str,
        command: str,
        args: Optional[list] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """Runs a command inside the running task, killed after `timeout` seconds (or
        `timeout_ms`); returns {exit_code, signal, stdout, stderr}."""
        req: JSON = {"task_id": task_id, "command": command, "args": list(args or [])}
        ms = _ms(timeout, timeout_ms)
        if ms is not None:
            req["timeout_ms"] = ms
        return self.call("exec", req)

    def exec_session(
        self,
        task_id: str,
        command: str,
        args: Optional[Sequence[str]] = None,
        tty: bool = False,
        stdin: bool = False,
        stream: bool = False,
        rows: Optional[int] = None,
        cols: Optional[int] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
        term: Optional[str] = None,
    ) -> "ExecSession":
        """Starts a command inside the running task, as exec() does, and returns at once
        with an ExecSession holding its input and output (the interactive form of
        driver_exec); its exit comes from ExecSession.wait().

        With `tty` the command gets a new pseudo-terminal (`rows` x `cols`, when given;
        both or neither) and the session's `tty` is its master, read for the output and
        written for the input. Without it the session's `stdout` and `stderr` are
        pipes, and `stdin` one too with `stdin=True` (else the command's stdin is
        /dev/null). `stream` is accepted for symmetry with the C API: a session always
        streams its output (nothing is captured or capped). `timeout` seconds (or
        `timeout_ms`; neither: no limit) SIGKILLs the command's process group when it
        passes. Errors at the start as for exec(); InvalidError for rows/cols without a
        tty or without each other. `term` (with `tty`) is the command's TERM; None: the
        task's own TERM, else "xterm"."""
        req: JSON = {
            "task_id": task_id,
            "command": command,
            "args": list(args or []),
            "tty": bool(tty),
            "stdin": bool(stdin),
            # Neither tty nor stdin: `stream` still asks for the interactive form.
            "stream": bool(stream) or not (tty or stdin),
        }
        if rows is not None:
            req["rows"] = rows
        if cols is not None:
            req["cols"] = cols
        if term is not None:
            req["term"] = term
        ms = _ms(timeout, timeout_ms)
        if ms is not None:
            if ms < 0:
                raise ValueError("timeout must be >= 0 (None: no limit)")
            req["timeout_ms"] = ms
        return ExecSession(self, self.call("exec", req))

    def exec_wait(
        self,
        exec_id: str,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """The exit of an interactive exec's command: {exec_id, exit_code, signal}.
        Waits up to `timeout` seconds (or `timeout_ms`; neither: forever, 0: poll);
        raises DriverTimeout (a TimeoutError) while the command still runs then. Once it
        has returned the exit the session is gone: later calls raise NotFoundError, as
        for an unknown exec_id. ExecSession.wait() keeps the exit for you."""
        req: JSON = {"exec_id": exec_id}
        ms = _ms(timeout, timeout_ms)
        if ms is not None:
            req["timeout_ms"] = ms
        return self.call("exec_wait", req)

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> JSON:
        """Sets the window size of a tty session's terminal (the command's foreground
        process group gets SIGWINCH); returns, once it is set, {exec_id, rows, cols}.
        InvalidError for a session without a tty, NotFoundError once its command has
        ended (or for an unknown exec_id)."""
        return self.call("exec_resize", {"exec_id": exec_id, "rows": rows, "cols": cols})

    # -- Task objects ------------------------------------------------------------------

    def start_task(self, task: Mapping[str, Any], wait_fd: bool = True) -> "Task":
        """Starts a task and returns a Task object for it. By default the Task holds the
        task's wait fd (for wait_async) and closes it once the exit is known, on
        destroy(), close() or when it is garbage-collected; `wait_fd=False` asks for
        none (then wait_async is not available)."""
        return Task(self, self.start(task, wait_fd=wait_fd))

    run = start_task

    def recover_task(self, handle: Mapping[str, Any], wait_fd: bool = False) -> "Task":
        """Re-registers a task from its handle and returns a Task object for it.

        `wait_fd=True` gives the Task a wait fd (a pidfd of the supervisor) for
        wait_async. Ask for it only for a task another process started: a supervisor
        this process started may be kept as an idle spare after its task ends, and its
        pidfd then does not become readable."""
        r = self.recover(handle, wait_fd=wait_fd)
        return Task(
            self,
            {"task_id": r.get("task_id", handle.get("task_id")), "handle": dict(handle),
             "wait_fd": r.get("wait_fd")},
        )


class Task:
    """A started task. As a context manager, leaving the block stops and destroys it.

    A Task started by Driver.start_task (or recovered with wait_fd=True) owns the
    task's wait fd: wait_async polls it in the event loop, and it is closed once the
    exit is known, by destroy() or close(), or when the Task is garbage-collected."""

    def __init__(self, driver: Driver, start_response: JSON) -> None:
        """Made by Driver.start_task/run/recover_task from their response: `.id`,
        `.pid`, `.task_dir` and `.handle` come from it, and the Task takes over its
        "wait_fd" if it has one (closing it is then the Task's)."""
        self.driver = driver
        self.start_response = start_response
        self.id: str = start_response["task_id"]
        self.pid: Optional[int] = start_response.get("pid")
        self.task_dir: Optional[str] = start_response.get("task_dir")
        self.handle: JSON = start_response.get("handle") or {}
        self._wait_fd: Optional[int] = start_response.get("wait_fd")
        self._fd_lock = threading.Lock()
        # wait_async callers parked on the fd: the loop it is registered with, and
        # their futures (one add_reader per fd and loop: a second would replace the first).
        self._reader_loop: Optional[asyncio.AbstractEventLoop] = None
        self._waiters: List["asyncio.Future[None]"] = []

    def __repr__(self) -> str:
        return "Task(id=%r, pid=%r)" % (self.id, self.pid)

    @property
    def wait_fd(self) -> Optional[int]:
        """The task's wait fd while the Task holds one (owned by the Task: do not close
        it), else None."""
        return self._wait_fd

    def wait(self, timeout: Optional[float] = None, timeout_ms: Optional[int] = None) -> JSON:
        """See Driver.wait."""
        return self.driver.wait(self.id, timeout, timeout_ms)

    async def wait_async(self, timeout: Optional[float] = None) -> JSON:
        """Waits for the task's exit in the running asyncio event loop, without a thread:
        the wait fd is watched with loop.add_reader, and once it is readable
        driver_wait(timeout_ms=0) gives the exit, as wait() does. `timeout` in seconds
        (None: no limit) raises DriverTimeout (a TimeoutError) while the task still runs;
        cancelling the coroutine leaves the task running. Several coroutines may wait on
        one Task. Raises ValueError for a Task without a wait fd whose exit is unknown."""
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[None]" = loop.create_future()
        with self._fd_lock:
            fd = self._wait_fd
            if fd is not None:
                if self._reader_loop is None:
                    loop.add_reader(fd, self._on_wait_fd)
                    self._reader_loop = loop
                elif self._reader_loop is not loop:
                    raise RuntimeError("wait_async of one Task from two event loops")
                self._waiters.append(fut)
        if fd is None:
            try:
                return self.driver.wait(self.id, timeout_ms=0)
            except DriverTimeout:
                raise ValueError(
                    "task %s has no wait fd: start it with start_task(..., wait_fd=True)" % self.id
                ) from None
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise DriverTimeout(
                int(Status.TIMEOUT), "timeout", "task %s still running after %ss" % (self.id, timeout)
            ) from None
        finally:
            with self._fd_lock:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                if not self._waiters and self._reader_loop is not None:
                    self._unregister()
        result = self.driver.wait(self.id, timeout_ms=0)
        # The exit is known: later waits need no fd.
        self.close()
        return result

    def _on_wait_fd(self) -> None:
        # Called by the loop (level-triggered): unregister at once, or it fires again.
        with self._fd_lock:
            self._unregister()
            waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    def _unregister(self) -> None:
        # With _fd_lock held.
        loop, self._reader_loop = self._reader_loop, None
        if loop is not None and self._wait_fd is not None and not loop.is_closed():
            loop.remove_reader(self._wait_fd)

    def close(self) -> None:
        """Closes the Task's wait fd, if it holds one (the task itself is untouched).
        Coroutines in wait_async go on to driver_wait; while one runs, call this (or
        destroy) from its event loop's thread, as asyncio's remove_reader wants."""
        with self._fd_lock:
            waiters = self._waiters
            self._waiters = []
            if self._reader_loop is not None:
                # Wake them in their loop; removing the reader must precede the close.
                loop = self._reader_loop
                self._unregister()
                for f in waiters:
                    loop.call_soon_threadsafe(_resolve, f)
            fd, self._wait_fd = self._wait_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "_wait_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def logs(
        self,
        stream: str = "stdout",
        follow: Union[bool, float] = False,
        from_end: Optional[int] = None,
        chunk: int = 65536,
        follow_ms: Optional[int] = None,
    ) -> Iterator[bytes]:
        """Iterates over the task's `stream` ("stdout" or "stderr") in chunks of bytes
        (each at most `chunk`, at most 1 MiB), from its start, or from `from_end` bytes
        before its current end. Without `follow` it stops at the current end; with
        `follow` it goes on until the task has ended and all its output was read, each
        read waiting up to `follow` seconds for more (a float; True is 1 s; or
        `follow_ms` with follow=True). Bytes rotated out before they were read are
        skipped (they are gone)."""
        wait_ms = _follow_ms(follow, follow_ms) if follow else 0
        offset, origin = (0, "start") if from_end is None else (from_end, "end")
        while True:
            r = self.driver.logs(
                self.id, stream, offset, origin, limit_bytes=chunk, follow_ms=wait_ms,
            )
            offset, origin = r.offset, "start"
            if r.data:
                yield r.data
            if r.eof or (not follow and not r.data):
                return
            if not r.data:
                # The library's eof needs it to know the task ended, which it learns
                # from the exit report (a wait) or the supervisor's end; a supervisor
                # kept for reuse ends only ~10 s later. A poll of the exit makes it
                # known now, so the next read can say eof.
                try:
                    self.driver.wait(self.id, timeout_ms=0)
                except DriverTimeout:
                    pass

    def stop(
        self,
        signal: Union[str, int, None] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """See Driver.stop."""
        return self.driver.stop(self.id, signal, timeout, timeout_ms)

    def destroy(self, force: bool = False, purge: bool = False) -> JSON:
        """See Driver.destroy (the same defaults). Closes the wait fd once destroyed."""
        r = self.driver.destroy(self.id, force=force, purge=purge)
        self.close()
        return r

    def inspect(self) -> JSON:
        """See Driver.inspect."""
        return self.driver.inspect(self.id)

    def stats(self) -> JSON:
        """See Driver.stats."""
        return self.driver.stats(self.id)

    def signal(self, signal: Union[str, int]) -> JSON:
        """See Driver.signal."""
        return self.driver.signal(self.id, signal)

    def exec(
        self,
        command: str,
        args: Optional[list] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """See Driver.exec."""
        return self.driver.exec(self.id, command, args, timeout, timeout_ms)

    def exec_session(
        self,
        command: str,
        args: Optional[Sequence[str]] = None,
        tty: bool = False,
        stdin: bool = False,
        stream: bool = False,
        rows: Optional[int] = None,
        cols: Optional[int] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
        term: Optional[str] = None,
    ) -> "ExecSession":
        """See Driver.exec_session."""
        return self.driver.exec_session(
            self.id, command, args, tty=tty, stdin=stdin, stream=stream,
            rows=rows, cols=cols, timeout=timeout, timeout_ms=timeout_ms, term=term,
        )

    def __enter__(self) -> "Task":
        """Returns the Task itself: `with driver.run(task) as t:`."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """Stops the task (its kill_signal, then SIGKILL after its kill_timeout) and
        destroys it (forced), whatever ended the block; an exception from the block
        propagates. A task already gone is no error; the wait fd is closed either way."""
        try:
            self.stop()
        except NotFoundError:
            return
        finally:
            try:
                self.destroy(force=True)
            except NotFoundError:
                self.close()


class _PtyIO(io.FileIO):
    """A pty master as a raw binary file. Once the terminal's other side is gone (the
    command and whatever it left holding the terminal have exited) a read of the master
    fails with EIO; here it is the end of the file instead: b"" (readinto: 0)."""

    def read(self, size: Optional[int] = -1) -> bytes:
        """Up to `size` bytes from one read (blocking until some are there); all of
        them to the end with size -1 or None; b"" at the end."""
        if size is None or size < 0:
            return self.readall()
        try:
            return super().read(size)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise

    def readall(self) -> bytes:
        """Everything up to the end (the command's exit)."""
        chunks: List[bytes] = []
        while True:
            b = self.read(65536)
            if not b:  # the end, or None: nothing now on a non-blocking fd
                return b"".join(chunks)
            chunks.append(b)

    def readinto(self, buffer: Any) -> int:
        """Reads into `buffer` (one read); 0 at the end."""
        try:
            return super().readinto(buffer)
        except OSError as e:
            if e.errno == errno.EIO:
                return 0
            raise


class ExecSession:
    """A command started in a task by Driver.exec_session / Task.exec_session.

    `exec_id` names the session, `pid` is the command's process (for information).
    With a tty, `tty` is the terminal's master (a raw binary file, read and write;
    reads give b"" at the end rather than EIO) and `stdin`, `stdout`, `stderr` are None.
    Without one, `stdout` and `stderr` are raw binary files of pipes from the command,
    and `stdin` (with stdin=True, else None) one to it: as subprocess.Popen's with
    bufsize=0. Close `stdin` for the command's EOF.

    The session owns these files: close() closes them all, as does leaving a `with`
    block; each also closes itself when garbage-collected (so a file the caller keeps,
    as in `t.exec_session(...).stdout`, stays open while it is used). Closing the tty hangs the terminal up: the command gets SIGHUP. Neither
    waits for the command: wait() does, and until it has returned the exit (or the
    task is destroyed, which kills the command) the library keeps the session."""

    def __init__(self, driver: Driver, response: JSON) -> None:
        """Made by Driver.exec_session from the interactive driver_exec's response: it
        takes over the response's fds (tty_fd, stdin_fd, stdout_fd, stderr_fd) as the
        files `tty`, `stdin`, `stdout`, `stderr`, closing every one of them should that
        fail."""
        self.driver = driver
        self.response = response
        self.exec_id: str = response["exec_id"]
        self.pid: Optional[int] = response.get("pid")
        self.tty: Optional[io.FileIO] = None
        self.stdin: Optional[io.FileIO] = None
        self.stdout: Optional[io.FileIO] = None
        self.stderr: Optional[io.FileIO] = None
        self._exit: Optional[ExecExit] = None
        self._wait_lock = threading.Lock()
        fds = [response.get(k) for k in ("tty_fd", "stdin_fd", "stdout_fd", "stderr_fd")]
        try:
            tty_fd, stdin_fd, stdout_fd, stderr_fd = fds
            if tty_fd is not None:
                self.tty = _PtyIO(tty_fd, "r+")
                fds[0] = None
            if stdin_fd is not None:
                self.stdin = io.FileIO(stdin_fd, "w")
                fds[1] = None
            if stdout_fd is not None:
                self.stdout = io.FileIO(stdout_fd, "r")
                fds[2] = None
            if stderr_fd is not None:
                self.stderr = io.FileIO(stderr_fd, "r")
                fds[3] = None
        except BaseException:
            # The fds are ours from the moment the call returned: none may leak.
            self.close()
            for fd in fds:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            raise

    def __repr__(self) -> str:
        return "ExecSession(exec_id=%r, pid=%r, tty=%r)" % (
            self.exec_id, self.pid, self.tty is not None,
        )

    @property
    def exit(self) -> Optional[ExecExit]:
        """The command's exit once wait() (or poll()) has returned it, else None."""
        return self._exit

    def wait(self, timeout: Optional[float] = None, timeout_ms: Optional[int] = None) -> ExecExit:
        """Waits for the command's exit and returns it as an ExecExit (exit_code,
        signal). Waits up to `timeout` seconds (or `timeout_ms`; neither: forever, 0:
        poll); raises DriverTimeout (a TimeoutError) while the command still runs then.
        The exit is kept: later calls return it at once. Several threads may wait.
        NotFoundError when the session is gone without an exit (its task destroyed)."""
        if self._exit is not None:
            return self._exit
        ms = _ms(timeout, timeout_ms)
        t0 = time.monotonic()
        # One driver_exec_wait at a time: the library hands the exit out once, and a
        # second caller then takes it from self._exit.
        if not self._wait_lock.acquire(timeout=-1 if ms is None or ms < 0 else ms / 1000.0):
            raise self._timeout(ms)
        try:
            if self._exit is None:
                if ms is not None and ms > 0:
                    ms = max(0, ms - int((time.monotonic() - t0) * 1000))
                r = self.driver.exec_wait(self.exec_id, timeout_ms=ms)
                self._exit = ExecExit(int(r["exit_code"]), int(r["signal"]))
            return self._exit
        finally:
            self._wait_lock.release()

    def poll(self) -> Optional[ExecExit]:
        """The command's exit if it has ended (as wait() gives it), else None."""
        try:
            return self.wait(timeout_ms=0)
        except DriverTimeout:
            return None

    def resize(self, rows: int, cols: int) -> None:
        """Sets the terminal's window size (the command gets SIGWINCH): what it reads
        with `stty size` or TIOCGWINSZ from then on. InvalidError for a session without
        a tty; NotFoundError once the command has ended."""
        self.driver.exec_resize(self.exec_id, rows, cols)

    def communicate(
        self, input: Optional[bytes] = None, timeout: Optional[float] = None
    ) -> Tuple[bytes, Optional[bytes]]:
        """Writes `input` to the command and reads its output to the end, then waits
        for its exit (see exit or wait()); returns (stdout, stderr), as
        subprocess.Popen.communicate does. Without a tty, stdin (if the session has it)
        is closed once `input` is written. With a tty, `input` goes to the terminal,
        which is not closed (that would hang it up), and the result is (everything the
        terminal showed, echoed input included, None): the input should make the
        command end (e.g. end in "exit\\n"). `timeout` in seconds for all of it (None:
        no limit) raises DriverTimeout, the output read so far being lost. Call it
        instead of reading the files yourself."""
        deadline = None if timeout is None else time.monotonic() + timeout
        writer = self.tty if self.tty is not None else self.stdin
        if input and (writer is None or writer.closed):
            raise ValueError("input needs an open stdin or tty (stdin=True or tty=True)")
        streams = (self.tty, self.stdout, self.stderr)
        readers = [f for f in streams if f is not None and not f.closed]
        out: Dict[int, List[bytes]] = {f.fileno(): [] for f in readers}
        # Where each stream's bytes go (-1: a file closed before the call, nothing read).
        fd_of = [-1 if f is None or f.closed else f.fileno() for f in streams]
        pending = memoryview(input or b"")
        if self.stdin is not None and not pending:
            self.stdin.close()
        files = list(readers)
        if self.stdin is not None and not self.stdin.closed:
            files.append(self.stdin)
        blocking = [(f, os.get_blocking(f.fileno())) for f in files]
        sel = selectors.DefaultSelector()
        try:
            for f, _ in blocking:
                os.set_blocking(f.fileno(), False)
            for f in readers:
                events = selectors.EVENT_READ
                if f is writer and pending:
                    events |= selectors.EVENT_WRITE
                sel.register(f.fileno(), events)
            if self.stdin is not None and not self.stdin.closed:
                sel.register(self.stdin.fileno(), selectors.EVENT_WRITE)
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timeout(None if timeout is None else int(timeout * 1000))
                for key, mask in sel.select(left):
                    fd = key.fd
                    if mask & selectors.EVENT_WRITE:
                        pending = self._write_some(fd, pending)
                        if not pending:
                            self._done_writing(sel, fd, fd in out)
                    if mask & selectors.EVENT_READ:
                        try:
                            data = os.read(fd, 65536)
                        except BlockingIOError:
                            continue
                        except OSError as e:
                            if e.errno != errno.EIO:  # EIO: a pty whose command is gone
                                raise
                            data = b""
                        if data:
                            out[fd].append(data)
                        else:
                            sel.unregister(fd)
        finally:
            sel.close()
            for f, was in blocking:
                if not f.closed:  # (stdin is closed once written: its number may be reused)
                    os.set_blocking(f.fileno(), was)
        if self.stdin is not None:
            self.stdin.close()  # input the command did not read (its stdout ended first)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(timeout=left)
        tty, stdout, stderr = (b"".join(out.get(fd, [])) for fd in fd_of)
        if self.tty is not None:
            return tty, None
        return stdout, stderr

    def _write_some(self, fd: int, pending: memoryview) -> memoryview:
        try:
            n = os.write(fd, pending[:65536])
        except BlockingIOError:
            return pending
        except OSError as e:
            # EPIPE: the command closed its stdin; EIO: the terminal's command is gone.
            if e.errno in (errno.EPIPE, errno.EIO):
                return pending[:0]
            raise
        return pending[n:]

    def _done_writing(self, sel: selectors.BaseSelector, fd: int, also_read: bool) -> None:
        if also_read:  # the tty: go on reading it
            sel.modify(fd, selectors.EVENT_READ)
        else:  # stdin: its end is the command's EOF
            sel.unregister(fd)
            if self.stdin is not None:
                self.stdin.close()

    def _timeout(self, ms: Optional[int]) -> DriverTimeout:
        return DriverTimeout(
            int(Status.TIMEOUT), "timeout",
            "exec %s still running after %s ms" % (self.exec_id, ms),
        )

    def close(self) -> None:
        """Closes the session's files (tty, stdin, stdout, stderr); a closed tty hangs
        the terminal up (the command gets SIGHUP). The command is not waited for (see
        wait()). Calling it again does nothing."""
        for f in (self.tty, self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> "ExecSession":
        """Returns the session itself: `with task.exec_session(...) as s:`."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """close(): the session's files are closed (a tty hangs up); the command is not
        waited for, and an exception from the block propagates."""
        self.close()


def _resolve(f: "asyncio.Future[None]") -> None:
    if not f.done():
        f.set_result(None)
