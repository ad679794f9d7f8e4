"""Python bindings for libexecdriver.so (docs/api.md), over ctypes, stdlib only.

    from execdriver import Driver, StartError

    drv = Driver()                      # EXECDRIVER_LIB, or libexecdriver.so next to this package
    with drv.run({"name": "hi", "driver": "raw_exec",
                  "config": {"command": "/bin/echo", "args": ["hi"]}}) as task:
        print(task.wait(timeout=5)["exit_code"])

Every operation takes and returns dicts; a non-OK status raises the `DriverError`
subclass for that status, carrying `.code`, `.field`, `.message` and `.status`.
"""

from ._driver import (
    ArtifactError,
    ConflictError,
    Driver,
    DriverError,
    DriverTimeout,
    ExecExit,
    ExecSession,
    InternalError,
    InvalidError,
    LOG_LEVELS,
    LogChunk,
    NotFoundError,
    StartError,
    Status,
    Task,
    UnsupportedError,
    find_library,
)

__all__ = [
    "ArtifactError",
    "ConflictError",
    "Driver",
    "DriverError",
    "DriverTimeout",
    "ExecExit",
    "ExecSession",
    "InternalError",
    "InvalidError",
    "LOG_LEVELS",
    "LogChunk",
    "NotFoundError",
    "StartError",
    "Status",
    "Task",
    "UnsupportedError",
    "find_library",
]
