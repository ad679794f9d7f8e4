"""The ctypes layer: library lookup, one method per driver_<op>, errors, Task."""

from __future__ import annotations

import ctypes
import enum
import json
import os
import threading
from typing import Any, Dict, Mapping, Optional, Type, Union

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
            raise OSError(
                "cannot load %s (%s); pass Driver(path=...) or set EXECDRIVER_LIB" % (path, e)
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
        abi = lib.driver_abi_version()
        if abi != 1:
            raise OSError("%s has C ABI %d; this package speaks 1" % (path, abi))
        _LIBS[path] = lib
        return lib


Request = Union[Mapping[str, Any], str, bytes, None]


class Driver:
    """A handle on libexecdriver.so. Cheap to create; safe to share between threads."""

    def __init__(self, path: Optional[str] = None) -> None:
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

    # -- one method per operation ------------------------------------------------------

    def configure(self, config: Optional[Mapping[str, Any]] = None) -> JSON:
        """Sets the plugin configuration (None: returns the current one)."""
        return self.call("configure", config)

    def fingerprint(self) -> JSON:
        """What this host can run: {health, health_description, attributes}."""
        return self.call("fingerprint")

    def start(self, task: Mapping[str, Any]) -> JSON:
        """Starts a task; returns {task_id, pid, task_dir, started_at, handle}."""
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

    def recover(self, handle: Mapping[str, Any]) -> JSON:
        """Re-registers a task from the handle driver_start returned (after a restart)."""
        return self.call("recover", {"handle": dict(handle)})

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

    # -- Task objects ------------------------------------------------------------------

    def start_task(self, task: Mapping[str, Any]) -> "Task":
        """Starts a task and returns a Task object for it."""
        return Task(self, self.start(task))

    run = start_task

    def recover_task(self, handle: Mapping[str, Any]) -> "Task":
        """Re-registers a task from its handle and returns a Task object for it."""
        self.recover(handle)
        return Task(self, {"task_id": handle.get("task_id"), "handle": dict(handle)})


class Task:
    """A started task. As a context manager, leaving the block stops and destroys it."""

    def __init__(self, driver: Driver, start_response: JSON) -> None:
        self.driver = driver
        self.start_response = start_response
        self.id: str = start_response["task_id"]
        self.pid: Optional[int] = start_response.get("pid")
        self.task_dir: Optional[str] = start_response.get("task_dir")
        self.handle: JSON = start_response.get("handle") or {}

    def __repr__(self) -> str:
        return "Task(id=%r, pid=%r)" % (self.id, self.pid)

    def wait(self, timeout: Optional[float] = None, timeout_ms: Optional[int] = None) -> JSON:
        """See Driver.wait."""
        return self.driver.wait(self.id, timeout, timeout_ms)

    def stop(
        self,
        signal: Union[str, int, None] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[int] = None,
    ) -> JSON:
        """See Driver.stop."""
        return self.driver.stop(self.id, signal, timeout, timeout_ms)

    def destroy(self, force: bool = False, purge: bool = False) -> JSON:
        """See Driver.destroy (the same defaults)."""
        return self.driver.destroy(self.id, force=force, purge=purge)

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

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        except NotFoundError:
            return
        finally:
            try:
                self.destroy(force=True)
            except NotFoundError:
                pass
