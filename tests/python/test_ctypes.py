"""ctypes tests of libexecdriver.so: every export of the C ABI (docs/api.md).

Stdlib only. Loads the library named by $EXECDRIVER_LIB (default: target/debug/
libexecdriver.so under the repository root). The library finds its supervisor next to
itself or through $EXECDRIVER_SHIM. State goes to $EXECDRIVER_DATA_DIR; when unset, this
module points it at a fresh temporary directory before loading the library.

Run (after `cargo build`):   tests/python/run.sh
or:   EXECDRIVER_LIB=target/debug/libexecdriver.so python3 -m unittest discover -s tests/python -v
`cargo test --test python_ctypes` runs this suite too.

Only raw_exec tasks are started here (the isolated `exec` job is covered by the C harness
test), but for the interactive exec (InteractiveExec*), which also runs in an exec task
where the host can run one (root, cgroups; else skipped, saying why). Every response is released with driver_free, and every test destroys its tasks.
"""

import ctypes
import errno
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB_PATH = os.environ.get("EXECDRIVER_LIB") or os.path.join(
    REPO, "target", "debug", "libexecdriver.so"
)

_DATA_DIR_OWNED = None
if not os.environ.get("EXECDRIVER_DATA_DIR"):
    _DATA_DIR_OWNED = tempfile.mkdtemp(prefix="execdriver-py-data-")
    os.environ["EXECDRIVER_DATA_DIR"] = _DATA_DIR_OWNED

# DriverStatus (include/execdriver.h)
OK, INVALID, NOT_FOUND, TIMEOUT, UNSUPPORTED, ARTIFACT, START, CONFLICT, INTERNAL = range(9)

OPS = [
    "configure", "fingerprint", "start", "wait", "stop", "destroy",
    "inspect", "stats", "signal", "recover", "exec", "exec_wait", "exec_resize", "logs",
]

lib = ctypes.CDLL(LIB_PATH)
lib.driver_abi_version.restype = ctypes.c_uint32
lib.driver_abi_version.argtypes = []
lib.driver_version.restype = ctypes.c_char_p  # static string: never freed
lib.driver_version.argtypes = []
# c_void_p (not c_char_p) so ctypes hands back the pointer itself, which we must free.
lib.driver_free.restype = None
lib.driver_free.argtypes = [ctypes.c_void_p]
for _op in OPS:
    _f = getattr(lib, "driver_" + _op)
    _f.restype = ctypes.c_int32
    _f.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]

FREED = [0]  # responses freed (for a sanity check)


def fn(op):
    return getattr(lib, "driver_" + op)


def call(f, req=None):
    """Calls driver_<op> with a dict (JSON-encoded), str, bytes or None (NULL).

    Returns (status, response dict); the response is always freed with driver_free."""
    if isinstance(f, str):
        f = fn(f)
    if isinstance(req, (dict, list)):
        req = json.dumps(req).encode()
    elif isinstance(req, str):
        req = req.encode()
    out = ctypes.c_void_p()
    status = f(req, ctypes.byref(out))
    try:
        if not out.value:
            raise AssertionError("response_json left NULL (status %d)" % status)
        text = ctypes.string_at(out.value).decode("utf-8")
    finally:
        lib.driver_free(out)
        FREED[0] += 1
    return status, json.loads(text)


def unavailable(test, reason):
    """Skips `test` for want of what CI has (root, cgroups); under CI (env CI set and not
    empty, as .ci/run sets it) fails it instead."""
    if os.environ.get("CI"):
        test.fail("required in CI: " + reason)
    test.skipTest(reason)


# The system calls in which a thread blocks inside driver_wait (the library polls the
# supervisor's pidfd and channel): poll and ppoll, by architecture.
_POLL_SYSCALLS = {"x86_64": {7, 271}, "aarch64": {73}}


def blocked_in_poll(native_ids, seconds=10):
    """Waits until every thread of `native_ids` is blocked in a poll system call, as
    /proc/self/task/<tid>/syscall shows it (a thread waiting for the GIL blocks in futex
    instead); False if that has not happened within `seconds`."""
    want = _POLL_SYSCALLS[os.uname().machine]
    deadline = time.monotonic() + seconds
    while True:
        calls = []
        for tid in native_ids:
            with open("/proc/self/task/%d/syscall" % tid) as f:
                calls.append(f.read().split()[0])
        if all(c.lstrip("-").isdigit() and int(c) in want for c in calls):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


class DriverTest(unittest.TestCase):
    """Each test gets its own alloc dirs under a temp dir; tasks it starts are destroyed."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="execdriver-py-")
        self.tasks = []
        self.n = 0

    def tearDown(self):
        for tid in self.tasks:
            call("destroy", {"task_id": tid, "force": True})
        shutil.rmtree(self.tmp, ignore_errors=True)

    # helpers -------------------------------------------------------------------------

    def alloc(self):
        self.n += 1
        d = os.path.join(self.tmp, "alloc%d" % self.n)
        os.makedirs(d)
        return d

    def task(self, script=None, name="t", **extra):
        t = {"name": name, "driver": "raw_exec", "alloc_dir": self.alloc(),
             "config": {"command": "/bin/sh", "args": ["-c", script or "true"]}}
        t.update(extra)
        return t

    def start(self, req):
        st, r = call("start", req)
        self.assertEqual(st, OK, r)
        self.tasks.append(r["task_id"])
        return r

    def wait(self, tid, timeout_ms=None):
        req = {"task_id": tid}
        if timeout_ms is not None:
            req["timeout_ms"] = timeout_ms
        return call("wait", req)

    def assertError(self, got, status, code, field=None):
        st, r = got
        self.assertEqual(st, status, r)
        self.assertIn("error", r, r)
        self.assertEqual(r["error"]["code"], code, r)
        self.assertTrue(r["error"].get("message"), r)
        if field is not None:
            self.assertEqual(r["error"].get("field"), field, r)
        return r["error"]

    def wait_for_file(self, path, seconds=10):
        end = time.monotonic() + seconds
        while not os.path.exists(path):
            self.assertLess(time.monotonic(), end, "task never created " + path)
            time.sleep(0.01)


class Basics(DriverTest):
    def test_abi_version(self):
        self.assertEqual(lib.driver_abi_version(), 1)

    def test_version(self):
        v = lib.driver_version().decode()
        self.assertRegex(v, r"^\d+\.\d+\.\d+")
        with open(os.path.join(REPO, "Cargo.toml")) as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        self.assertEqual(v, m.group(1))
        # static: same pointer every time, stays valid
        self.assertEqual(lib.driver_version().decode(), v)

    def test_free_null(self):
        lib.driver_free(None)

    def test_configure_null_and_empty(self):
        for req in (None, "{}", {}):
            st, r = call("configure", req)
            self.assertEqual(st, OK, r)
            self.assertEqual(r["data_dir"], os.environ["EXECDRIVER_DATA_DIR"], r)
            self.assertEqual(r["env_passthrough"], ["PATH"], r)
            self.assertIn("shim_path", r)

    def test_configure_errors(self):
        self.assertError(call("configure", {"data_dir": 5}), INVALID, "invalid_config", "data_dir")
        e = self.assertError(call("configure", {"bogus": 1}), INVALID, "invalid_config", "bogus")
        self.assertIn("bogus", e["message"])
        self.assertError(call("configure", "[]"), INVALID, "invalid_json")
        self.assertError(call("configure", "{"), INVALID, "invalid_json")
        # a failed configure changes nothing
        st, r = call("configure", None)
        self.assertEqual((st, r["data_dir"]), (OK, os.environ["EXECDRIVER_DATA_DIR"]))

    def test_fingerprint_null_and_empty(self):
        for req in (None, "{}"):
            st, r = call("fingerprint", req)
            self.assertEqual(st, OK, r)
            self.assertIn(r["health"], ("healthy", "unhealthy", "undetected"), r)
            self.assertTrue(r["health_description"], r)
            self.assertEqual(r["attributes"]["driver.raw_exec"], "1", r)
            if "driver.exec" not in r["attributes"]:
                self.assertNotEqual(r["health"], "healthy", r)


class Lifecycle(DriverTest):
    def test_start_wait_inspect_destroy(self):
        r = self.start(self.task("echo out; echo err >&2; exit 4", name="web",
                                 env={"X": "${NOMAD_TASK_NAME}-x"}))
        tid = r["task_id"]
        for k in ("task_id", "pid", "task_dir", "started_at", "handle"):
            self.assertIn(k, r)
        self.assertIsInstance(r["pid"], int)
        self.assertTrue(tid.startswith("web"), tid)
        st, w = self.wait(tid)  # forever
        self.assertEqual(st, OK, w)
        self.assertEqual((w["task_id"], w["exit_code"], w["signal"]), (tid, 4, 0), w)
        self.assertEqual(w["oom_killed"], False)
        self.assertIsNone(w["err"])
        self.assertTrue(w["started_at"] and w["finished_at"], w)

        st, i = call("inspect", {"task_id": tid})
        self.assertEqual(st, OK, i)
        self.assertEqual((i["task_id"], i["name"], i["driver"], i["state"]),
                         (tid, "web", "raw_exec", "exited"), i)
        self.assertEqual(i["exit"], w)
        self.assertEqual(i["task_dir"], r["task_dir"])

        logs = os.path.join(os.path.dirname(r["task_dir"]), "alloc", "logs")
        with open(os.path.join(logs, "web.stdout.0")) as f:
            self.assertEqual(f.read(), "out\n")
        with open(os.path.join(logs, "web.stderr.0")) as f:
            self.assertEqual(f.read(), "err\n")

        st, d = call("destroy", {"task_id": tid})
        self.assertEqual(st, OK, d)
        self.tasks.remove(tid)
        self.assertError(call("inspect", {"task_id": tid}), NOT_FOUND, "task_not_found")
        self.assertError(self.wait(tid), NOT_FOUND, "task_not_found")
        self.assertTrue(os.path.isdir(r["task_dir"]), "destroy without purge keeps the dir")

    def test_explicit_id_and_purge(self):
        tid = "py-explicit-%d" % os.getpid()
        r = self.start(dict(self.task("exit 0"), id=tid))
        self.assertEqual(r["task_id"], tid)
        self.assertEqual(self.wait(tid)[1]["exit_code"], 0)
        st, d = call("destroy", {"task_id": tid, "purge": True})
        self.assertEqual(st, OK, d)
        self.tasks.remove(tid)
        self.assertFalse(os.path.exists(r["task_dir"]))

    def test_default_alloc_dir_under_data_dir(self):
        t = self.task("exit 0")
        del t["alloc_dir"]
        r = self.start(t)
        self.assertTrue(r["task_dir"].startswith(os.environ["EXECDRIVER_DATA_DIR"]), r)
        self.assertEqual(self.wait(r["task_id"])[1]["exit_code"], 0)
        call("destroy", {"task_id": r["task_id"], "purge": True})
        self.tasks.remove(r["task_id"])

    def test_inspect_running(self):
        r = self.start(self.task("sleep 30"))
        st, i = call("inspect", {"task_id": r["task_id"]})
        self.assertEqual(st, OK, i)
        self.assertEqual(i["state"], "running", i)
        self.assertEqual(i["pid"], r["pid"])
        self.assertIsNone(i["exit"])
        self.assertEqual(i["handle"], r["handle"])

    def hup_exits_7(self, sig):
        ready = os.path.join(self.tmp, "ready-%s" % (sig,))
        r = self.start(self.task(
            "trap 'exit 7' HUP; touch %s; while :; do sleep 0.05; done" % ready))
        self.wait_for_file(ready)
        st, s = call("signal", {"task_id": r["task_id"], "signal": sig})
        self.assertEqual(st, OK, s)
        st, w = self.wait(r["task_id"], 10000)
        self.assertEqual(st, OK, w)
        self.assertEqual(w["exit_code"], 7, (sig, w))

    def test_signal_names_and_numbers(self):
        for sig in ("HUP", "SIGHUP", "hup", "1"):
            self.hup_exits_7(sig)

    def test_signal_as_json_number(self):
        # docs/api.md, driver_signal: a name with or without SIG, any case, or a number.
        self.hup_exits_7(1)

    def test_signal_errors(self):
        r = self.start(self.task("sleep 30"))
        self.assertError(call("signal", {"task_id": r["task_id"], "signal": "SIGBOGUS"}),
                         INVALID, "invalid_request", "signal")
        self.assertError(call("signal", {"task_id": "nope", "signal": "HUP"}),
                         NOT_FOUND, "task_not_found")

    def test_stop_handlerless_sleep_with_sigterm_within_grace(self):
        r = self.start({"name": "s", "driver": "raw_exec", "alloc_dir": self.alloc(),
                        "config": {"command": "/bin/sleep", "args": ["600"]}})
        tid = r["task_id"]
        self.assertError(self.wait(tid, 0), TIMEOUT, "timeout")
        t0 = time.monotonic()
        st, w = call("stop", {"task_id": tid, "signal": "SIGTERM", "timeout_ms": 10000})
        took = time.monotonic() - t0
        self.assertEqual(st, OK, w)
        self.assertLess(took, 5.0, "stop waited for the grace period: SIGTERM not forwarded")
        self.assertEqual((w["signal"], w["exit_code"]), (15, 143), w)
        # stopping an exited task is not an error and gives the same object
        st, w2 = call("stop", {"task_id": tid})
        self.assertEqual((st, w2), (OK, w))
        self.assertEqual(self.wait(tid), (OK, w))

    def test_stop_kills_after_grace(self):
        ready = os.path.join(self.tmp, "ready")
        r = self.start(self.task("trap '' TERM; touch %s; while :; do sleep 0.05; done" % ready))
        self.wait_for_file(ready)
        t0 = time.monotonic()
        st, w = call("stop", {"task_id": r["task_id"], "signal": "TERM", "timeout_ms": 300})
        self.assertEqual(st, OK, w)
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual((w["signal"], w["exit_code"]), (9, 137), w)

    def test_exit_by_signal_is_128_plus_n(self):
        # `$$` is the interpolation escape for `$`: the shell sees `kill -USR1 $$`.
        r = self.start(self.task("kill -USR1 $$$$"))
        st, w = self.wait(r["task_id"])
        self.assertEqual(st, OK, w)
        self.assertEqual((w["signal"], w["exit_code"]), (10, 138), w)

    def test_stats_recover_exec(self):
        # Written when these were stubs (DRIVER_UNSUPPORTED); accepts both that and the
        # implemented behaviour, which it then checks.
        r = self.start(self.task("sleep 30"))
        tid = r["task_id"]

        st, s = call("stats", {"task_id": tid})
        self.assertIn(st, (OK, UNSUPPORTED), s)
        if st == OK:
            for k in ("timestamp_ns", "memory", "cpu", "pids"):
                self.assertIn(k, s)
        else:
            self.assertEqual(s["error"]["code"], "unsupported", s)

        st, v = call("recover", {"handle": r["handle"]})  # already registered: not an error
        self.assertIn(st, (OK, UNSUPPORTED), v)
        if st == UNSUPPORTED:
            self.assertEqual(v["error"]["code"], "unsupported", v)

        st, x = call("exec", {"task_id": tid, "command": "/bin/echo", "args": ["hi"],
                              "timeout_ms": 10000})
        self.assertIn(st, (OK, UNSUPPORTED), x)
        if st == OK:
            self.assertEqual((x["exit_code"], x["stdout"]), (0, "hi\n"), x)
        else:
            self.assertEqual(x["error"]["code"], "unsupported", x)

        # unknown task: not found once implemented, unsupported while a stub
        for op, req in (("stats", {"task_id": "nope"}),
                        ("exec", {"task_id": "nope", "command": "/bin/true"})):
            st, e = call(op, req)
            self.assertIn(st, (NOT_FOUND, UNSUPPORTED), e)
        st, e = call("recover", {"handle": {"bogus": True}})
        self.assertIn(st, (INVALID, UNSUPPORTED), e)
        for op in ("stats", "recover", "exec"):
            st, e = call(op, None)
            self.assertIn(st, (INVALID, UNSUPPORTED), e)

        st, w = call("stop", {"task_id": tid, "signal": "KILL"})
        self.assertEqual(st, OK, w)


class Errors(DriverTest):
    def test_invalid_json(self):
        for op in ("start", "wait", "stop", "destroy", "inspect", "signal", "configure"):
            self.assertError(call(op, b"{not json"), INVALID, "invalid_json")
        self.assertError(call("start", "[1, 2]"), INVALID, "invalid_json")

    def test_invalid_config_names_the_field(self):
        t = self.task()
        t["resources"] = {"memory_mb": "a lot"}
        self.assertError(call("start", t), INVALID, "invalid_config", "resources.memory_mb")
        t = self.task()
        t["driver"] = "docker"
        self.assertError(call("start", t), INVALID, "invalid_config", "driver")
        t = self.task()
        del t["config"]["command"]
        self.assertError(call("start", t), INVALID, "invalid_config", "config.command")
        t = self.task()
        t["id"] = "../escape"
        self.assertError(call("start", t), INVALID, "invalid_config", "id")

    def test_unknown_key_is_named(self):
        t = self.task()
        t["config"]["comand"] = t["config"].pop("command")
        e = self.assertError(call("start", t), INVALID, "invalid_config", "config.comand")
        self.assertIn("comand", e["message"])

    def test_null_request(self):
        for op in ("start", "wait", "stop", "destroy", "inspect", "signal"):
            self.assertError(call(op, None), INVALID, "invalid_request")

    def test_non_utf8_request(self):
        bad = b'{"name": "\xff\xfe", "config": {"command": "/bin/true"}}'
        for op in OPS:
            self.assertError(call(op, bad), INVALID, "invalid_json")

    def test_task_not_found(self):
        for op, req in (("wait", {"task_id": "nope"}), ("wait", {"task_id": "nope", "timeout_ms": 0}),
                        ("stop", {"task_id": "nope"}), ("destroy", {"task_id": "nope"}),
                        ("inspect", {"task_id": "nope"}),
                        ("signal", {"task_id": "nope", "signal": "HUP"})):
            self.assertError(call(op, req), NOT_FOUND, "task_not_found", "task_id")

    def test_timeout(self):
        r = self.start(self.task("sleep 30"))
        self.assertError(self.wait(r["task_id"], 0), TIMEOUT, "timeout")
        t0 = time.monotonic()
        self.assertError(self.wait(r["task_id"], 200), TIMEOUT, "timeout")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.15)
        self.assertLess(took, 5)

    def test_conflict_duplicate_id(self):
        tid = "py-dup-%d" % os.getpid()
        self.start(dict(self.task("sleep 30"), id=tid))
        self.assertError(call("start", dict(self.task("true"), id=tid)), CONFLICT, "task_exists")

    def test_conflict_destroy_running(self):
        r = self.start(self.task("sleep 30"))
        self.assertError(call("destroy", {"task_id": r["task_id"]}), CONFLICT, "task_running")
        st, d = call("destroy", {"task_id": r["task_id"], "force": True})
        self.assertEqual(st, OK, d)
        self.tasks.remove(r["task_id"])
        self.assertError(call("inspect", {"task_id": r["task_id"]}), NOT_FOUND, "task_not_found")

    def test_command_not_found(self):
        t = self.task()
        t["config"] = {"command": "/nonexistent/execdriver-no-such-binary"}
        self.assertError(call("start", t), START, "command_not_found")

    def test_artifact_denied(self):
        t = self.task()
        t["config"] = {"command": "local/hostname", "artifact_source": "file:///etc/hostname"}
        self.assertError(call("start", t), ARTIFACT, "artifact_denied")

    def test_null_response_pointer_accepted(self):
        self.assertEqual(lib.driver_fingerprint(None, None), OK)
        self.assertEqual(lib.driver_configure(None, None), OK)
        self.assertEqual(lib.driver_wait(b'{"task_id": "nope"}', None), NOT_FOUND)
        self.assertEqual(lib.driver_start(None, None), INVALID)
        self.assertEqual(lib.driver_start(b"\xff", None), INVALID)
        self.assertIn(lib.driver_stats(b'{"task_id": "nope"}', None), (NOT_FOUND, UNSUPPORTED))
        tid = "py-nullout-%d" % os.getpid()
        req = json.dumps(dict(self.task("exit 2"), id=tid)).encode()
        self.assertEqual(lib.driver_start(req, None), OK)
        self.tasks.append(tid)
        self.assertEqual(lib.driver_wait(json.dumps({"task_id": tid}).encode(), None), OK)
        self.assertEqual(self.wait(tid)[1]["exit_code"], 2)
        self.assertEqual(lib.driver_destroy(json.dumps({"task_id": tid}).encode(), None), OK)
        self.tasks.remove(tid)


class Concurrency(DriverTest):
    def test_concurrent_starts_from_8_threads(self):
        n = 8
        barrier = threading.Barrier(n)
        results = [None] * n
        reqs = [self.task("exit %d" % i, name="c%d" % i) for i in range(n)]

        def worker(i):
            barrier.wait()
            results[i] = call("start", reqs[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for st, r in results:
            self.assertEqual(st, OK, r)
            self.tasks.append(r["task_id"])
        self.assertEqual(len({r["task_id"] for _, r in results}), n)
        self.assertEqual(len({r["pid"] for _, r in results}), n)
        for i, (_, r) in enumerate(results):
            st, w = self.wait(r["task_id"], 30000)
            self.assertEqual((st, w["exit_code"]), (OK, i), w)

    def test_8_waiters_get_identical_results(self):
        ready = os.path.join(self.tmp, "go")
        r = self.start(self.task(
            "while [ ! -e %s ]; do sleep 0.02; done; exit 5" % ready))
        tid = r["task_id"]
        n = 8
        results = [None] * n
        ids = [None] * n
        started = threading.Barrier(n + 1)

        def waiter(i):
            ids[i] = threading.get_native_id()
            started.wait()
            results[i] = self.wait(tid)  # forever

        threads = [threading.Thread(target=waiter, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        started.wait()
        # Every waiter inside driver_wait before the task may exit.
        self.assertTrue(blocked_in_poll(ids), "the waiters are not all in driver_wait")
        open(ready, "w").close()
        for t in threads:
            t.join(30)
            self.assertFalse(t.is_alive(), "a waiter never returned")
        for st, w in results:
            self.assertEqual(st, OK, w)
            self.assertEqual(w, results[0][1])
        self.assertEqual(results[0][1]["exit_code"], 5)
        self.assertEqual(self.wait(tid, 0), results[0])  # as often as asked

    def test_mixed_calls_from_threads(self):
        r = self.start(self.task("sleep 30"))
        tid = r["task_id"]
        errors = []

        def hammer():
            try:
                for _ in range(25):
                    for op, req in (("inspect", {"task_id": tid}), ("fingerprint", None),
                                    ("wait", {"task_id": tid, "timeout_ms": 0}),
                                    ("configure", None), ("inspect", {"task_id": "nope"})):
                        st, _ = call(op, req)
                        if st not in (OK, TIMEOUT, NOT_FOUND):
                            errors.append((op, st))
            except Exception as e:  # noqa: BLE001 - report any failure from the thread
                errors.append(e)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])


class HostUntouched(DriverTest):
    def test_host_process_state_unchanged(self):
        handlers = {s: signal.getsignal(s) for s in (signal.SIGCHLD, signal.SIGTERM,
                                                       signal.SIGINT, signal.SIGPIPE)}
        cwd = os.getcwd()
        env = dict(os.environ)
        umask = os.umask(0o022)
        os.umask(umask)
        # a child of ours must not be reaped by the library
        child = subprocess.Popen(["/bin/sh", "-c", "sleep 0.3; exit 9"])
        r = self.start(self.task("exit 0"))
        self.assertEqual(self.wait(r["task_id"])[1]["exit_code"], 0)
        r2 = self.start(self.task("sleep 30"))
        st, _ = call("stop", {"task_id": r2["task_id"], "signal": "KILL"})
        self.assertEqual(st, OK)
        self.assertEqual(child.wait(10), 9)
        self.assertEqual({s: signal.getsignal(s) for s in handlers}, handlers)
        self.assertEqual(os.getcwd(), cwd)
        self.assertEqual(dict(os.environ), env)
        self.assertEqual(os.umask(umask), umask)

    def test_host_fds_do_not_reach_the_task(self):
        rfd, wfd = os.pipe()
        os.set_inheritable(wfd, True)  # even an inheritable fd must not leak
        try:
            out = os.path.join(self.tmp, "fds")
            r = self.start(self.task("ls /proc/self/fd > %s" % out))
            self.assertEqual(self.wait(r["task_id"])[1]["exit_code"], 0)
            with open(out) as f:
                fds = sorted(int(x) for x in f.read().split())
            # 0-2 plus the fd `ls` opens to read the directory
            self.assertLessEqual(len(fds), 4, fds)
            self.assertEqual(fds[:3], [0, 1, 2])
        finally:
            os.close(rfd)
            os.close(wfd)


def read_fd_until(fd, needle, seconds=20):
    """Reads the fd (poll, then one read) until what was read contains `needle`."""
    deadline = time.monotonic() + seconds
    got = b""
    while needle not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError("never read %r; got %r" % (needle, got))
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError("EOF before %r; got %r" % (needle, got))
        got += chunk
    return got


def read_fd_to_end(fd):
    """Reads the fd to EOF (or EIO: a pty master whose command is gone)."""
    got = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:
                return got
            raise
        if not chunk:
            return got
        got += chunk


class InteractiveExecRaw(DriverTest):
    """driver_exec with "stdin"/"stream"/"tty", driver_exec_wait, driver_exec_resize: the
    fds they hand over are read and written here with os.read/os.write. In a raw_exec
    task; in an exec task in InteractiveExecIsolated."""

    DRIVER = "raw_exec"

    def setUp(self):
        super().setUp()
        if self.DRIVER == "exec":
            st, fp = call("fingerprint")
            if fp["attributes"].get("driver.exec") != "1":
                unavailable(self, "exec unavailable here: %s" % fp["health_description"])
        t = self.task("echo ready; exec sleep 600", name="it")
        t["driver"] = self.DRIVER
        self.tid = self.start(t)["task_id"]
        # Running: its first output is in its log.
        log = os.path.join(t["alloc_dir"], "alloc", "logs", "it.stdout.0")
        st, r = call("logs", {"task_id": self.tid, "follow_ms": 10000})
        self.assertEqual(st, OK, r)
        if not r["data"]:
            self.fail("no output from the task: " + log)

    def exec(self, **req):
        st, r = call("exec", dict(req, task_id=self.tid))
        self.assertEqual(st, OK, r)
        for k in ("tty_fd", "stdin_fd", "stdout_fd", "stderr_fd"):
            if k in r:
                self.addCleanup(close_quietly, r[k])
        return r

    def exec_wait(self, exec_id, timeout_ms=20000):
        return call("exec_wait", {"exec_id": exec_id, "timeout_ms": timeout_ms})

    def test_stdin_pipe_roundtrip(self):
        r = self.exec(command="/bin/sh", stdin=True,
                      args=["-c", "read l; echo out:$l; echo err:$l >&2; exit 7"])
        self.assertEqual(sorted(r), ["exec_id", "pid", "stderr_fd", "stdin_fd", "stdout_fd"])
        for k in ("stdin_fd", "stdout_fd", "stderr_fd"):
            self.assertFalse(os.get_inheritable(r[k]), k)  # close-on-exec
        self.assertError(self.exec_wait(r["exec_id"], 0), TIMEOUT, "timeout")
        os.write(r["stdin_fd"], b"hi\n")
        os.close(r["stdin_fd"])
        self.assertEqual(read_fd_to_end(r["stdout_fd"]), b"out:hi\n")
        self.assertEqual(read_fd_to_end(r["stderr_fd"]), b"err:hi\n")
        st, w = self.exec_wait(r["exec_id"])
        self.assertEqual(st, OK, w)
        self.assertEqual(w, {"exec_id": r["exec_id"], "exit_code": 7, "signal": 0})
        # Waited for once: the session is gone.
        self.assertError(self.exec_wait(r["exec_id"], 0), NOT_FOUND, "task_not_found", "exec_id")

    def test_stream_stdout_and_stderr_apart(self):
        r = self.exec(command="/bin/sh", stream=True,
                      args=["-c", "echo o1; echo e1 >&2; echo o2; echo e2 >&2; exit 5"])
        self.assertNotIn("stdin_fd", r)
        self.assertNotIn("tty_fd", r)
        self.assertEqual(read_fd_to_end(r["stdout_fd"]), b"o1\no2\n")
        self.assertEqual(read_fd_to_end(r["stderr_fd"]), b"e1\ne2\n")
        self.assertError(call("exec_resize", {"exec_id": r["exec_id"], "rows": 5, "cols": 5}),
                         INVALID, "invalid_request", "exec_id")
        st, w = self.exec_wait(r["exec_id"])
        self.assertEqual((st, w["exit_code"], w["signal"]), (OK, 5, 0), w)

    def test_tty_shell_exits_3(self):
        r = self.exec(command="/bin/sh", tty=True)
        self.assertEqual(sorted(r), ["exec_id", "pid", "tty_fd"])
        m = r["tty_fd"]
        self.assertTrue(os.isatty(m))
        os.write(m, b"echo $((6*7))\nexit 3\n")
        # The echoed input holds no "42": the shell printed it.
        read_fd_until(m, b"42")
        st, w = self.exec_wait(r["exec_id"])
        self.assertEqual((st, w["exit_code"], w["signal"]), (OK, 3, 0), w)
        read_fd_to_end(m)  # then EOF/EIO: the terminal's command is gone

    def test_tty_resize_stty_size(self):
        r = self.exec(command="/bin/sh", tty=True, rows=24, cols=80)
        m, exec_id = r["tty_fd"], r["exec_id"]
        # `m""k1` typed, `mk1` printed.
        os.write(m, b'tty -s && echo is""tty; stty size; echo m""k1\n')
        got = read_fd_until(m, b"mk1")
        self.assertIn(b"istty", got)
        self.assertIn(b"24 80", got)
        st, z = call("exec_resize", {"exec_id": exec_id, "rows": 33, "cols": 77})
        self.assertEqual((st, z), (OK, {"exec_id": exec_id, "rows": 33, "cols": 77}))
        os.write(m, b'stty size; echo m""k2\n')
        self.assertIn(b"33 77", read_fd_until(m, b"mk2").split(b"mk1")[-1])
        self.assertError(call("exec_resize", {"exec_id": exec_id, "rows": 0, "cols": 77}),
                         INVALID, "invalid_request", "rows")
        os.write(m, b"exit\n")
        st, w = self.exec_wait(exec_id)
        self.assertEqual((st, w["exit_code"]), (OK, 0), w)
        self.assertError(call("exec_resize", {"exec_id": exec_id, "rows": 5, "cols": 5}),
                         NOT_FOUND, "task_not_found")

    def test_exec_wait_timeout(self):
        r = self.exec(command="/bin/sleep", args=["600"], stream=True)
        t0 = time.monotonic()
        self.assertError(self.exec_wait(r["exec_id"], 200), TIMEOUT, "timeout")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.15)
        self.assertLess(took, 5)
        # The exec's own timeout_ms kills it.
        r = self.exec(command="/bin/sleep", args=["30"], stream=True, timeout_ms=200)
        st, w = self.exec_wait(r["exec_id"])
        self.assertEqual((st, w["exit_code"], w["signal"]), (OK, 137, 9), w)


class InteractiveExecIsolated(InteractiveExecRaw):
    """The same in an exec task: needs root and cgroups (else skipped, saying why)."""

    DRIVER = "exec"


class InteractiveExecErrors(DriverTest):
    def test_unknown_exec_id(self):
        self.assertError(call("exec_wait", {"exec_id": "exec-nope"}),
                         NOT_FOUND, "task_not_found", "exec_id")
        self.assertError(call("exec_wait", {"exec_id": "exec-nope", "timeout_ms": 0}),
                         NOT_FOUND, "task_not_found", "exec_id")
        self.assertError(call("exec_resize", {"exec_id": "exec-nope", "rows": 5, "cols": 5}),
                         NOT_FOUND, "task_not_found")
        for op in ("exec_wait", "exec_resize"):
            self.assertError(call(op, None), INVALID, "invalid_request")
            self.assertError(call(op, "{"), INVALID, "invalid_json")


def close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass  # the test closed it


def tearDownModule():
    if _DATA_DIR_OWNED:
        shutil.rmtree(_DATA_DIR_OWNED, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
