"""Tests of the `execdriver` Python package (python/execdriver), stdlib only.

Run (after `cargo build`), from the repository root:
    PYTHONPATH=python EXECDRIVER_LIB=target/debug/libexecdriver.so \
        python3 -m unittest discover -s tests/python_pkg -v
`cargo test --test python_pkg` runs this suite against the freshly built library.
Only raw_exec tasks are started, but for the exec sessions (ExecSession*), which also run
in an exec task where the host can run one (root, cgroups; else skipped, saying why);
every test destroys its tasks.
"""

import asyncio
import gc
import inspect
import io
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDIR = os.path.join(REPO, "python")
if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)

if not os.environ.get("EXECDRIVER_LIB"):
    os.environ["EXECDRIVER_LIB"] = os.path.join(REPO, "target", "debug", "libexecdriver.so")
_DATA_DIR_OWNED = None
if not os.environ.get("EXECDRIVER_DATA_DIR"):
    _DATA_DIR_OWNED = tempfile.mkdtemp(prefix="execdriver-pypkg-")
    os.environ["EXECDRIVER_DATA_DIR"] = _DATA_DIR_OWNED

import execdriver  # noqa: E402
from execdriver import (  # noqa: E402
    ArtifactError,
    ConflictError,
    Driver,
    DriverError,
    DriverTimeout,
    ExecExit,
    ExecSession,
    InternalError,
    InvalidError,
    LogChunk,
    NotFoundError,
    StartError,
    Task,
    UnsupportedError,
)


def tearDownModule():
    if _DATA_DIR_OWNED:
        shutil.rmtree(_DATA_DIR_OWNED, ignore_errors=True)


def raw(name, command, *args, **extra):
    t = {"name": name, "driver": "raw_exec", "config": {"command": command, "args": list(args)}}
    t.update(extra)
    return t


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unavailable(test, reason):
    """Skips `test` for want of what CI has (root, cgroups); under CI (env CI set and not
    empty, as .ci/run sets it) fails it instead."""
    if os.environ.get("CI"):
        test.fail("required in CI: " + reason)
    test.skipTest(reason)


class ReadmeSnippet(unittest.TestCase):
    def test_readme_snippet(self):
        """Runs the Python block of python/README.md as written."""
        import contextlib
        import io
        import re

        with open(os.path.join(PYDIR, "README.md")) as f:
            block = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
        self.assertLess(len(block.splitlines()), 20)
        out = io.StringIO()
        scope = {}
        with contextlib.redirect_stdout(out):
            exec(compile(block, "python/README.md", "exec"), scope)
        lines = out.getvalue().splitlines()
        task = scope["task"]
        self.assertEqual(lines, [task.id + " running", "from exec", "still running: timeout 3", "2"])
        with self.assertRaises(execdriver.NotFoundError):
            scope["drv"].inspect(task.id)


    def test_readme_exec_session_snippet(self):
        """Runs python/README.md's second Python block (an ExecSession's) as written,
        with `task` a running raw_exec task."""
        import contextlib
        import io
        import re
        import textwrap

        with open(os.path.join(PYDIR, "README.md")) as f:
            blocks = re.findall(r"^( *)```python\n(.*?)^\1```", f.read(), re.S | re.M)
        self.assertEqual(len(blocks), 2)
        block = textwrap.dedent(blocks[1][1])
        out = io.StringIO()
        with Driver().run(raw("rdme", "/bin/sleep", "600")) as task:
            with contextlib.redirect_stdout(out):
                exec(compile(block, "python/README.md", "exec"), {"task": task})
        self.assertEqual(out.getvalue().splitlines(),
                         ["[b'go', b'30 100'] ExecExit(exit_code=3, signal=0)",
                          "(b'HI\\n', b'')"])


class HappyPath(unittest.TestCase):
    def setUp(self):
        self.d = Driver()

    def test_versions_and_fingerprint(self):
        self.assertEqual(self.d.abi_version(), 1)
        self.assertRegex(self.d.version(), r"^\d+\.\d+\.\d+")
        fp = self.d.fingerprint()
        self.assertEqual(fp["attributes"]["driver.raw_exec"], "1")
        cfg = self.d.configure()
        self.assertEqual(cfg["data_dir"], os.environ["EXECDRIVER_DATA_DIR"])

    def test_raw_exec_runs_to_completion(self):
        task = self.d.start_task(raw("hp", "/bin/sh", "-c", "echo out; exit 3"))
        try:
            self.assertIsInstance(task, Task)
            self.assertTrue(task.id.startswith("hp-"), task.id)
            self.assertIsInstance(task.pid, int)
            self.assertTrue(os.path.isdir(task.task_dir))
            w = task.wait(timeout_ms=10000)
            self.assertEqual(w["exit_code"], 3, w)
            self.assertEqual(w["signal"], 0, w)
            self.assertEqual(w["task_id"], task.id)
            again = self.d.wait(task.id)
            self.assertEqual(again["exit_code"], 3)
            ins = task.inspect()
            self.assertEqual(ins["state"], "exited")
            self.assertEqual(ins["exit"]["exit_code"], 3)
            self.assertEqual(task.stop()["exit_code"], 3)  # stopping an exited task is fine
        finally:
            task.destroy(purge=True)
        self.assertFalse(os.path.exists(task.task_dir))

    def test_signal_stats_exec_recover(self):
        with self.d.run(raw("sig", "/bin/sleep", "600")) as task:
            self.assertEqual(task.inspect()["state"], "running")
            self.assertIn("pids", task.stats())
            out = task.exec("/bin/sh", ["-c", "echo $1; echo err >&2; exit 4", "sh", "x"])
            self.assertEqual((out["exit_code"], out["stdout"], out["stderr"]), (4, "x\n", "err\n"))
            # Recovering a registered task is not an error.
            again = self.d.recover_task(task.handle)
            self.assertEqual(again.id, task.id)
            task.signal("SIGTERM")
            w = task.wait(timeout_ms=10000)
            self.assertEqual((w["signal"], w["exit_code"]), (15, 143), w)


class Errors(unittest.TestCase):
    def setUp(self):
        self.d = Driver()

    def check(self, err, cls, status, code):
        self.assertIsInstance(err, cls)
        self.assertIsInstance(err, DriverError)
        self.assertEqual(err.status, status)
        self.assertEqual(err.code, code)
        self.assertTrue(err.message)
        self.assertIn(err.code, str(err))

    def test_library_log_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "driver.log")
            cfg = self.d.configure({"log_path": path, "log_level": "debug"})
            try:
                self.assertEqual((cfg["log_path"], cfg["log_level"]), (path, "debug"))
                task = self.d.start_task(raw("logged", "/bin/sh", "-c", "exit 5"))
                try:
                    self.assertEqual(task.wait(timeout=10)["exit_code"], 5)
                finally:
                    task.destroy()
                with self.assertRaises(InvalidError) as cm:
                    self.d.configure({"log_path": os.path.join(tmp, "no", "x.log")})
                self.assertEqual(cm.exception.field, "log_path")
            finally:
                self.d.configure({})
            with open(path) as f:
                text = f.read()
            self.assertIn("DEBUG task %s: received" % task.id, text)
            self.assertIn("INFO  task %s: exited: exit code 5" % task.id, text)
            self.assertIn("INFO  task %s: destroyed" % task.id, text)

    def test_library_log_to_a_logger(self):
        records = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append((record.levelno, record.getMessage(), threading.current_thread()))

        logger = logging.getLogger("execdriver-test-%d" % os.getpid())
        logger.setLevel(1)
        logger.propagate = False
        logger.addHandler(Keep())
        with self.assertRaises(ValueError):
            self.d.log_to(logger, level="loud")
        self.d.log_to(logger, level="debug")
        try:
            task = self.d.start_task(raw("pylog", "/bin/sh", "-c", "exit 6"))
            try:
                self.assertEqual(task.wait(timeout=10)["exit_code"], 6)
                # From inside the callback the Driver may be called (nothing it logs
                # comes back).
                seen = []
                self.d.set_log_callback(
                    lambda lvl, msg: seen.append((lvl, msg, self.d.fingerprint()["health"])),
                    level="info")
            finally:
                task.destroy()
        finally:
            self.d.set_log_callback(None)  # flushes what is queued
        msgs = [m for _, m, _ in records]
        self.assertIn((logging.DEBUG, "task %s: received: raw_exec task \"pylog\"" % task.id),
                      [(l, m) for l, m, _ in records])
        self.assertIn("task %s: exited: exit code 6" % task.id, msgs)
        self.assertTrue(all(t is not threading.current_thread() for _, _, t in records))
        self.assertEqual([(l, m) for l, m, _ in seen if "destroyed" in m],
                         [("info", "task %s: destroyed" % task.id)])
        self.assertTrue(all(h for _, _, h in seen))

    def test_hierarchy(self):
        for cls in (InvalidError, NotFoundError, DriverTimeout, UnsupportedError,
                    ArtifactError, StartError, ConflictError, InternalError):
            self.assertTrue(issubclass(cls, DriverError), cls)

    def test_invalid_config_names_field(self):
        with self.assertRaises(InvalidError) as cm:
            self.d.start({"name": "bad", "driver": "raw_exec", "config": {"args": ["x"]}})
        self.check(cm.exception, InvalidError, 1, "invalid_config")
        self.assertEqual(cm.exception.field, "config.command")
        with self.assertRaises(InvalidError) as cm:
            self.d.start({"name": "bad", "driver": "raw_exec", "config": {"comand": "x"}})
        self.assertEqual(cm.exception.field, "config.comand")
        with self.assertRaises(InvalidError) as cm:
            self.d.call("start", "{not json")
        self.check(cm.exception, InvalidError, 1, "invalid_json")

    def test_not_found(self):
        for op in (self.d.wait, self.d.inspect, self.d.stats, self.d.destroy):
            with self.assertRaises(NotFoundError) as cm:
                op("execdriver-pypkg-no-such-task")
            self.check(cm.exception, NotFoundError, 2, "task_not_found")

    def test_timeout(self):
        with self.d.run(raw("to", "/bin/sleep", "600")) as task:
            t0 = time.monotonic()
            with self.assertRaises(DriverTimeout) as cm:
                task.wait(timeout_ms=200)
            self.assertGreaterEqual(time.monotonic() - t0, 0.15)
            self.check(cm.exception, DriverTimeout, 3, "timeout")
            with self.assertRaises(DriverTimeout):
                task.wait(timeout_ms=0)

    def test_conflict(self):
        with self.d.run(raw("cf", "/bin/sleep", "600", id="pypkg-conflict-1")) as task:
            with self.assertRaises(ConflictError) as cm:
                self.d.start(raw("cf", "/bin/true", id="pypkg-conflict-1"))
            self.check(cm.exception, ConflictError, 7, "task_exists")
            with self.assertRaises(ConflictError) as cm:
                self.d.destroy(task.id)  # running, no force
            self.check(cm.exception, ConflictError, 7, "task_running")

    def test_command_not_found_is_start_error(self):
        with self.assertRaises(StartError) as cm:
            self.d.start(raw("nf", "/nonexistent/execdriver-nope"))
        self.check(cm.exception, StartError, 6, "command_not_found")

    def test_artifact_error(self):
        task = raw("art", "/bin/true")
        task["artifacts"] = [{"source": "file:///nonexistent/execdriver-pypkg.bin"}]
        with self.assertRaises(ArtifactError) as cm:
            self.d.start(task)
        self.assertEqual(cm.exception.status, 5)
        self.assertTrue(cm.exception.code.startswith("artifact_"), cm.exception.code)

    def test_unknown_op_is_value_error(self):
        with self.assertRaises(ValueError):
            self.d.call("frobnicate")


class Threads(unittest.TestCase):
    def test_eight_concurrent_tasks(self):
        d = Driver()
        results, errors = {}, []

        def worker(i):
            try:
                task = d.start_task(raw("th%d" % i, "/bin/sh", "-c", "sleep 0.2; exit %d" % i))
                try:
                    results[i] = task.wait(timeout_ms=30000)["exit_code"]
                finally:
                    task.destroy()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((i, e))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(results, {i: i for i in range(8)})


class ContextManager(unittest.TestCase):
    def test_exit_stops_and_destroys_a_sleeping_task(self):
        d = Driver()
        t0 = time.monotonic()
        with d.run(raw("cm", "/bin/sleep", "600", kill_timeout_ms=2000)) as task:
            pid = task.pid
            self.assertTrue(pid_alive(pid))
        self.assertLess(time.monotonic() - t0, 30)
        with self.assertRaises(NotFoundError):
            d.inspect(task.id)
        # Nothing of the task is left: its supervisor is gone, or (raw_exec) it was taken
        # back as an idle spare for the next start, with no process under it.
        children = "/proc/%d/task/%d/children" % (pid, pid)
        if pid_alive(pid) and os.path.exists(children):
            with open(children) as f:
                self.assertEqual(f.read().split(), [], "supervisor %d has children" % pid)

    def test_exit_on_exception_still_cleans_up(self):
        d = Driver()
        with self.assertRaises(RuntimeError):
            with d.run(raw("cm2", "/bin/sleep", "600")) as task:
                raise RuntimeError("boom")
        with self.assertRaises(NotFoundError):
            d.inspect(task.id)


def open_fds():
    """What this process's fds point at ("pipe:[123]", "anon_inode:[pidfd]", ...)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass  # the fd of the listing itself
    return out


def fds_back_to(test, base):
    """Waits up to 2 s for the fd count to fall to `base` (the library's background
    threads may hold an fd for a moment)."""
    deadline = time.monotonic() + 2
    while len(open_fds()) > base and time.monotonic() < deadline:
        time.sleep(0.02)
    test.assertLessEqual(len(open_fds()), base, open_fds())


# 300 numbered lines (about 3 KB) on stdout, one line on stderr.
PRINTER = "i=1; while [ $i -le 300 ]; do echo line $i; i=$((i+1)); done; echo oops >&2"
PRINTED = b"".join(b"line %d\n" % i for i in range(1, 301))


class Logs(unittest.TestCase):
    def setUp(self):
        self.d = Driver()

    def test_full_read_tail_and_stderr(self):
        with self.d.run(raw("logs", "/bin/sh", "-c", PRINTER)) as task:
            task.wait(timeout=10)
            self.assertEqual(b"".join(task.logs(chunk=1000)), PRINTED)
            self.assertTrue(all(len(c) <= 1000 for c in task.logs(chunk=1000)))
            self.assertEqual(b"".join(task.logs(from_end=20)), PRINTED[-20:])
            self.assertEqual(list(task.logs("stderr")), [b"oops\n"])
            r = self.d.logs(task.id)
            self.assertIsInstance(r, LogChunk)
            self.assertEqual((r.data, r.start, r.offset, r.eof), (PRINTED, 0, len(PRINTED), True))
            r = self.d.logs(task.id, offset=7, origin="end", limit_bytes=3)
            self.assertEqual((r.data, r.start, r.eof), (PRINTED[-7:-4], len(PRINTED) - 7, False))
            r = self.d.logs(task.id, offset=len(PRINTED))
            self.assertEqual((r.data, r.eof), (b"", True))
            with self.assertRaises(InvalidError):
                self.d.logs(task.id, stream="stdin")
        with self.assertRaises(NotFoundError):
            self.d.logs(task.id)

    def test_follow_in_seconds(self):
        # A running task that writes nothing: a follow of 0.3 s (or 300 ms) returns empty
        # after about that long; without one, at once.
        with self.d.run(raw("quiet", "/bin/sleep", "600")) as task:
            for kw in ({"follow": 0.3}, {"follow_ms": 300}):
                t0 = time.monotonic()
                r = self.d.logs(task.id, **kw)
                took = time.monotonic() - t0
                self.assertEqual((r.data, r.eof), (b"", False), kw)
                self.assertGreaterEqual(took, 0.25, kw)
                self.assertLess(took, 5, kw)
            t0 = time.monotonic()
            self.assertEqual(self.d.logs(task.id).data, b"")
            self.assertLess(time.monotonic() - t0, 0.25)
            with self.assertRaises(TypeError):
                self.d.logs(task.id, follow=0.3, follow_ms=300)
            with self.assertRaises(ValueError):
                self.d.logs(task.id, follow=-1.0)

    def test_follow_yields_everything_then_ends(self):
        script = "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done; " + PRINTER
        want = b"".join(b"tick %d\n" % i for i in range(1, 6)) + PRINTED
        t0 = time.monotonic()
        with self.d.run(raw("follow", "/bin/sh", "-c", script)) as task:
            chunks = list(task.logs(follow=0.3, chunk=512))
            self.assertEqual(b"".join(chunks), want)
            self.assertGreater(len(chunks), 5)  # it read while the task wrote
            self.assertEqual(task.wait(timeout_ms=0)["exit_code"], 0)
        self.assertLess(time.monotonic() - t0, 10)

    def test_follow_from_end_of_a_running_task(self):
        script = "echo old; echo ready; while [ ! -e $NOMAD_TASK_DIR/go ]; do sleep 0.01; done; echo new"
        with self.d.run(raw("tail", "/bin/sh", "-c", script)) as task:
            deadline = time.monotonic() + 10
            while b"ready" not in b"".join(task.logs()) and time.monotonic() < deadline:
                time.sleep(0.02)
            it = task.logs(follow=True, from_end=6, follow_ms=200)
            self.assertEqual(next(it), b"ready\n")
            open(os.path.join(task.task_dir, "local", "go"), "w").close()
            self.assertEqual(b"".join(it), b"new\n")


class WaitAsync(unittest.TestCase):
    def setUp(self):
        self.d = Driver()

    def test_gather_finishes_in_exit_order_and_closes_fds(self):
        base = len(open_fds())
        script = "while [ ! -e $NOMAD_TASK_DIR/go ]; do sleep 0.01; done; exit %d"

        async def main():
            # Started in one order; each exits once the test creates its gate file, in
            # the reverse order, the next only after the previous one's wait returned.
            tasks = [self.d.start_task(raw("wa%d" % i, "/bin/sh", "-c", script % i))
                     for i in range(4)]
            names = [open_fds()[t.wait_fd] for t in tasks]
            finished = []
            returned = [asyncio.Event() for _ in tasks]

            async def one(i, t):
                w = await t.wait_async(timeout=20)
                finished.append(w["exit_code"])
                returned[i].set()
                return w

            t0 = time.monotonic()
            gathered = asyncio.gather(*(one(i, t) for i, t in enumerate(tasks)))
            seen = []
            for i in (3, 2, 1, 0):
                open(os.path.join(tasks[i].task_dir, "local", "go"), "w").close()
                await asyncio.wait_for(returned[i].wait(), 20)
                # That task's wait returned, and none of those still gated.
                seen.append(list(finished))
            results = await gathered
            took = time.monotonic() - t0
            for t in tasks:
                self.assertIsNone(t.wait_fd)  # the exit is known: closed
                t.destroy()
            return names, seen, [w["exit_code"] for w in results], took

        names, seen, codes, took = asyncio.run(main())
        self.assertEqual(seen, [[3], [3, 2], [3, 2, 1], [3, 2, 1, 0]])
        self.assertEqual(codes, [0, 1, 2, 3])
        self.assertLess(took, 20)
        still = set(open_fds().values())
        self.assertFalse([n for n in names if n in still], names)
        fds_back_to(self, base)

    def test_several_waiters_timeout_and_cancel(self):
        async def main(task):
            with self.assertRaises(DriverTimeout):
                await task.wait_async(timeout=0.2)
            waiter = asyncio.ensure_future(task.wait_async())
            await asyncio.sleep(0.1)
            waiter.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await waiter
            # Two at once on the one fd, then the stop.
            both = asyncio.gather(task.wait_async(), task.wait_async(timeout=30))
            await asyncio.sleep(0.1)
            task.signal("SIGKILL")
            return await both

        with self.d.run(raw("wac", "/bin/sleep", "600")) as task:
            a, b = asyncio.run(main(task))
            self.assertEqual((a["signal"], b["signal"]), (9, 9))
            self.assertIsNone(task.wait_fd)

    def test_destroy_closes_the_fd(self):
        base = len(open_fds())
        task = self.d.start_task(raw("wad", "/bin/sleep", "600"))
        name = open_fds()[task.wait_fd]
        self.assertTrue(name.startswith("pipe:"), name)
        self.assertGreaterEqual(len(open_fds()), base + 1)
        task.destroy(force=True)
        self.assertIsNone(task.wait_fd)
        self.assertNotIn(name, open_fds().values())
        fds_back_to(self, base)
        # And a Task dropped without destroy closes it when collected.
        task = self.d.start_task(raw("wad2", "/bin/true"))
        tid = task.id
        del task
        fds_back_to(self, base)
        self.d.destroy(tid, force=True)

    def test_without_a_wait_fd(self):
        with self.d.run(raw("wan", "/bin/sleep", "600"), wait_fd=False) as task:
            self.assertIsNone(task.wait_fd)
            with self.assertRaises(ValueError):
                asyncio.run(task.wait_async())
            task.stop(signal="SIGKILL")
            self.assertEqual(asyncio.run(task.wait_async())["signal"], 9)

    def test_recovered_task_pidfd(self):
        # A task started by another host process, which then exits; this one recovers
        # it with a wait fd (a pidfd of its supervisor) and waits on that.
        code = (
            "import json, execdriver\n"
            "r = execdriver.Driver().start({'name': 'warec', 'driver': 'raw_exec', "
            "'config': {'command': '/bin/sh', 'args': ['-c', 'sleep 1; exit 7']}})\n"
            "print(json.dumps(r['handle']))\n"
        )
        env = dict(os.environ, PYTHONPATH=PYDIR)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        handle = json.loads(out.stdout)
        base = len(open_fds())
        task = self.d.recover_task(handle, wait_fd=True)
        try:
            self.assertIn("pidfd", open_fds()[task.wait_fd])
            w = asyncio.run(task.wait_async(timeout=30))
            self.assertEqual(w["exit_code"], 7, w)
            self.assertIsNone(task.wait_fd)
            self.assertEqual([e["type"] for e in task.inspect()["events"]][-1], "exited")
        finally:
            task.destroy(force=True)
        fds_back_to(self, base)


class EventsAndStats(unittest.TestCase):
    def test_events_after_stop_and_measured_stats(self):
        d = Driver()
        with d.run(raw("ev", "/bin/sh", "-c", "while :; do :; done", kill_signal="SIGKILL")) as task:
            time.sleep(0.3)
            d.stats(task.id)  # the rates are since the previous call
            time.sleep(0.3)
            st = task.stats()
            cpu = st["cpu"]
            self.assertIn("total_ns", cpu["measured"])
            for k in ("percent", "user_percent", "system_percent", "total_ticks"):
                self.assertIsInstance(cpu[k], float, k)
            self.assertIn("percent", cpu["measured"])
            self.assertGreater(cpu["percent"], 10.0, cpu)  # a busy loop
            self.assertIn("current", st["pids"]["measured"])
            self.assertIsInstance(st["memory"]["measured"], list)
            task.stop()
            events = task.inspect()["events"]
        types = [e["type"] for e in events]
        self.assertEqual(types[:2], ["received", "started"], events)
        self.assertEqual(types[-2:], ["killing", "exited"], events)
        self.assertIn("signal 9", events[-1]["message"])
        for e in events:
            self.assertEqual(sorted(e), ["message", "time", "type"])
            self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT.*Z$")


def read_until(f, needle, seconds=20):
    """Reads the file `f` (raw: each read returns what is there) until what was read
    contains `needle` (bytes); returns all of it. Fails at EOF or after `seconds`."""
    deadline = time.monotonic() + seconds
    got = b""
    while needle not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([f], [], [], left)[0]:
            raise AssertionError("never read %r; got %r" % (needle, got))
        chunk = f.read(4096)
        if not chunk:
            raise AssertionError("EOF before %r; got %r" % (needle, got))
        got += chunk
    return got


def pipe_names(*files):
    """What the files' fds point at ("pipe:[123]"): unique while open."""
    return [os.readlink("/proc/self/fd/%d" % f.fileno()) for f in files]


class ExecSessionRaw(unittest.TestCase):
    """Driver.exec_session / Task.exec_session: the interactive driver_exec with pipes or
    a tty, ExecSession.wait/poll/resize/communicate/close. In a raw_exec task here; in an
    exec task in ExecSessionExec."""

    DRIVER = "raw_exec"

    def setUp(self):
        self.d = Driver()
        if self.DRIVER == "exec":
            fp = self.d.fingerprint()
            if fp["attributes"].get("driver.exec") != "1":
                unavailable(self, "exec unavailable here: %s" % fp["health_description"])
        self.task = self.d.start_task(
            {"name": "es", "driver": self.DRIVER,
             "config": {"command": "/bin/sh", "args": ["-c", "echo ready; exec sleep 600"]}})
        self.addCleanup(self.destroy)
        # Running (its command's first output read back): ready for an exec.
        seen = b""
        for chunk in self.task.logs(follow=True, follow_ms=500):
            seen += chunk
            if b"ready" in seen:
                break
        self.assertIn(b"ready", seen)

    def destroy(self):
        try:
            self.task.destroy(force=True)
        except NotFoundError:
            pass  # the test destroyed it

    def test_stdin_pipe_roundtrip(self):
        base = len(open_fds())
        s = self.task.exec_session(
            "/bin/sh", ["-c", "read l; echo out:$l:$NOMAD_TASK_NAME; echo err:$l >&2; exit 7"],
            stdin=True)
        self.assertIsInstance(s, ExecSession)
        self.assertTrue(s.exec_id.startswith("exec-"), s.exec_id)
        self.assertIsInstance(s.pid, int)
        self.assertIsNone(s.tty)
        for f in (s.stdin, s.stdout, s.stderr):
            self.assertIsInstance(f, io.RawIOBase)
            self.assertFalse(os.get_inheritable(f.fileno()))
        self.assertTrue(s.stdin.writable() and s.stdout.readable() and s.stderr.readable())
        names = pipe_names(s.stdin, s.stdout, s.stderr)
        self.assertTrue(all(n.startswith("pipe:") for n in names), names)
        # It waits for its stdin.
        with self.assertRaises(DriverTimeout):
            s.wait(timeout=0)
        self.assertIsNone(s.poll())
        self.assertIsNone(s.exit)
        s.stdin.write(b"hi\n")
        s.stdin.close()
        self.assertEqual(s.stdout.read(), b"out:hi:es\n")
        self.assertEqual(s.stderr.read(), b"err:hi\n")
        w = s.wait(timeout=20)
        self.assertEqual(w, ExecExit(exit_code=7, signal=0))
        self.assertEqual((w.exit_code, w.signal), (7, 0))
        self.assertEqual(s.exit, w)
        self.assertEqual(s.wait(), w)  # kept: the library hands the exit out once
        self.assertEqual(s.poll(), w)
        with self.assertRaises(NotFoundError):
            self.d.exec_wait(s.exec_id, timeout=0)
        s.close()
        s.close()  # again: nothing
        self.assertTrue(s.stdin.closed and s.stdout.closed and s.stderr.closed)
        self.assertFalse(set(names) & set(open_fds().values()), names)
        fds_back_to(self, base)

    def test_stream_stdout_and_stderr_apart(self):
        s = self.d.exec_session(
            self.task.id, "/bin/sh",
            ["-c", "echo o1; echo e1 >&2; echo o2; echo e2 >&2; head -c 2000000 /dev/zero; exit 5"],
            stream=True)
        with s:
            self.assertIsNone(s.stdin)  # the command's stdin is /dev/null
            self.assertIsNone(s.tty)
            out = s.stdout.read()
            self.assertEqual(out, b"o1\no2\n" + bytes(2000000))  # not captured, not capped
            self.assertEqual(s.stderr.read(), b"e1\ne2\n")
            self.assertEqual(s.wait(timeout=20), (5, 0))
        self.assertTrue(s.stdout.closed and s.stderr.closed)
        # Without any of tty, stdin, stream it streams too.
        with self.task.exec_session("/bin/cat") as s:
            self.assertIsNone(s.stdin)
            self.assertEqual((s.stdout.read(), s.stderr.read()), (b"", b""))
            self.assertEqual(s.wait(timeout=20).exit_code, 0)

    def test_communicate(self):
        s = self.task.exec_session(
            "/bin/sh", ["-c", "tr a-z A-Z; echo done >&2; exit 2"], stdin=True)
        self.assertEqual(s.communicate(b"hello\n", timeout=20), (b"HELLO\n", b"done\n"))
        self.assertEqual(s.exit, (2, 0))
        self.assertTrue(s.stdin.closed)
        s.close()
        # More than the pipes hold each way: written and read at once.
        data = os.urandom(3 * 1024 * 1024)
        with self.task.exec_session("/bin/cat", stdin=True) as s:
            self.assertEqual(s.communicate(data, timeout=60), (data, b""))
            self.assertEqual(s.exit, (0, 0))
        # With a tty: what the terminal showed (the input echoed), no stderr.
        with self.task.exec_session("/bin/sh", tty=True) as s:
            out, err = s.communicate(b"echo $((6*7)); exit 4\n", timeout=20)
            self.assertIsNone(err)
            self.assertIn(b"42", out.replace(b"$((6*7))", b""))
            self.assertEqual(s.exit, (4, 0))
        # No input for a session without stdin or tty.
        with self.task.exec_session("/bin/true") as s:
            with self.assertRaises(ValueError):
                s.communicate(b"x")
            self.assertEqual(s.communicate(), (b"", b""))
            self.assertEqual(s.exit.exit_code, 0)

    def test_tty_shell(self):
        base = len(open_fds())
        s = self.task.exec_session("/bin/sh", tty=True, term="vt100")
        self.assertIsInstance(s.tty, io.RawIOBase)
        self.assertTrue(os.isatty(s.tty.fileno()))
        self.assertIsNone(s.stdin)
        self.assertIsNone(s.stdout)
        self.assertIsNone(s.stderr)
        s.tty.write(b"echo $((6*7)) $TERM\nexit 3\n")
        # The terminal echoes the input, which holds no "42": that is the shell's.
        got = read_until(s.tty, b"42 vt100")
        self.assertIn(b"$((6*7))", got)
        self.assertEqual(s.wait(timeout=20), (3, 0))
        # The command is gone: the rest, then the end (b"", not EIO).
        s.tty.read()
        self.assertEqual(s.tty.read(100), b"")
        s.close()
        self.assertTrue(s.tty.closed)
        fds_back_to(self, base)

    def test_tty_size_and_resize(self):
        s = self.task.exec_session("/bin/sh", tty=True, rows=24, cols=80)
        with s:
            # `is""tty` typed, `istty` printed: what follows the echo is the shell's.
            s.tty.write(b'tty -s && echo is""tty; stty size; echo m""k1\n')
            got = read_until(s.tty, b"mk1")
            self.assertIn(b"istty", got)
            self.assertIn(b"24 80", got)
            s.resize(33, 77)
            s.tty.write(b'stty size; echo m""k2\n')
            got = read_until(s.tty, b"mk2")
            self.assertIn(b"33 77", got.split(b"mk1")[-1])
            self.assertNotIn(b"24 80", got.split(b"mk1")[-1])
            r = self.d.exec_resize(s.exec_id, 40, 120)
            self.assertEqual(r, {"exec_id": s.exec_id, "rows": 40, "cols": 120})
            s.tty.write(b'stty size; echo m""k3\n')
            self.assertIn(b"40 120", read_until(s.tty, b"mk3"))
            s.tty.write(b"exit\n")
            self.assertEqual(s.wait(timeout=20), (0, 0))
            with self.assertRaises(NotFoundError):
                s.resize(10, 10)  # its command has ended

    def test_bad_requests(self):
        with self.assertRaises(InvalidError) as cm:
            self.task.exec_session("/bin/true", rows=10, cols=10)  # no tty
        self.assertEqual(cm.exception.field, "rows")
        with self.assertRaises(InvalidError) as cm:
            self.task.exec_session("/bin/true", tty=True, rows=10)
        self.assertEqual(cm.exception.field, "cols")
        with self.assertRaises(StartError) as cm:
            self.task.exec_session("/nonexistent/execdriver-nope", tty=True)
        self.assertEqual(cm.exception.code, "command_not_found")
        with self.task.exec_session("/bin/true", stream=True) as s:
            with self.assertRaises(InvalidError) as cm:
                s.resize(10, 10)  # no tty
            self.assertEqual(cm.exception.field, "exec_id")
            self.assertEqual(s.wait(timeout=20), (0, 0))
        with self.assertRaises(NotFoundError):
            self.d.exec_session("execdriver-pypkg-no-such-task", "/bin/true", stream=True)

    def test_timeouts(self):
        with self.task.exec_session("/bin/sleep", ["600"]) as s:
            t0 = time.monotonic()
            with self.assertRaises(DriverTimeout) as cm:
                s.wait(timeout=0.2)
            self.assertGreaterEqual(time.monotonic() - t0, 0.15)
            self.assertIsInstance(cm.exception, TimeoutError)
            self.assertEqual((cm.exception.status, cm.exception.code), (3, "timeout"))
            with self.assertRaises(TimeoutError):
                s.communicate(timeout=0.2)
            self.assertIsNone(s.exit)
        # `timeout` at the start: the command is killed when it passes.
        t0 = time.monotonic()
        with self.task.exec_session("/bin/sleep", ["30"], timeout=0.2) as s:
            self.assertEqual(s.wait(timeout=20), (137, 9))
        self.assertLess(time.monotonic() - t0, 10)

    def test_close_gc_and_destroy_end_sessions(self):
        base = len(open_fds())
        # Leaving the block closes stdin: cat reads its EOF and exits.
        with self.task.exec_session("/bin/cat", stdin=True) as s:
            names = pipe_names(s.stdin, s.stdout, s.stderr)
        self.assertTrue(s.stdin.closed and s.stdout.closed and s.stderr.closed)
        self.assertEqual(s.wait(timeout=20), (0, 0))
        self.assertFalse(set(names) & set(open_fds().values()), names)
        # A file the caller keeps outlives its session.
        s = self.task.exec_session("/bin/sh", ["-c", "echo kept"])
        self.assertEqual(s.stdout.read(), b"kept\n")
        s.wait(timeout=20)
        s = self.task.exec_session("/bin/sh", ["-c", "echo kept"])
        out, exec_id = s.stdout, s.exec_id
        del s
        gc.collect()
        self.assertEqual(out.read(), b"kept\n")
        out.close()
        self.d.exec_wait(exec_id, timeout=20)
        # A session dropped unclosed closes its fds when collected: for a tty that is
        # a hangup, and the shell dies of SIGHUP.
        s = self.task.exec_session("/bin/sh", tty=True)
        exec_id = s.exec_id
        self.assertGreater(len(open_fds()), base)
        del s
        gc.collect()
        w = self.d.exec_wait(exec_id, timeout=20)
        self.assertEqual((w["exec_id"], w["signal"]), (exec_id, signal.SIGHUP), w)
        fds_back_to(self, base)  # (the library's fds of the session go with its exit)
        # Destroying the task kills its sessions' commands: the output ends, the
        # session is gone.
        s = self.task.exec_session("/bin/sleep", ["600"], tty=True)
        self.task.destroy(force=True)
        self.assertEqual(s.tty.read(), b"")
        with self.assertRaises(NotFoundError):
            s.wait(timeout=0)
        s.close()
        self.assertTrue(s.tty.closed)


class ExecSessionExec(ExecSessionRaw):
    """The same in an exec task (namespaces, chroot, cgroups): needs root and cgroups."""

    DRIVER = "exec"


class ExecSessionErrors(unittest.TestCase):
    def test_unknown_exec_id(self):
        d = Driver()
        with self.assertRaises(NotFoundError) as cm:
            d.exec_wait("exec-nope")
        self.assertEqual((cm.exception.status, cm.exception.code), (2, "task_not_found"))
        self.assertEqual(cm.exception.field, "exec_id")
        with self.assertRaises(NotFoundError):
            d.exec_wait("exec-nope", timeout=0.1)
        with self.assertRaises(NotFoundError):
            d.exec_resize("exec-nope", 10, 10)


class LibraryLookup(unittest.TestCase):
    """Order: Driver(path=...), $EXECDRIVER_LIB, python/execdriver/libexecdriver.so."""

    def setUp(self):
        self.lib = os.environ["EXECDRIVER_LIB"]
        self.tmp = tempfile.mkdtemp(prefix="execdriver-pypkg-lookup-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_argument_beats_environment(self):
        old = os.environ["EXECDRIVER_LIB"]
        os.environ["EXECDRIVER_LIB"] = "/nonexistent/libexecdriver.so"
        try:
            self.assertEqual(execdriver.find_library(self.lib), self.lib)
            self.assertEqual(Driver(self.lib).path, self.lib)
            self.assertEqual(execdriver.find_library(), "/nonexistent/libexecdriver.so")
            with self.assertRaises(OSError) as cm:
                Driver()
            self.assertIn("EXECDRIVER_LIB", str(cm.exception))
        finally:
            os.environ["EXECDRIVER_LIB"] = old

    def run_child(self, code, env_lib=None, drop=()):
        env = dict(os.environ)
        for name in ("EXECDRIVER_LIB", "EXECDRIVER_SHIM") + tuple(drop):
            env.pop(name, None)
        if env_lib:
            env["EXECDRIVER_LIB"] = env_lib
        env["PYTHONPATH"] = os.path.join(self.tmp, "site")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)

    def test_library_next_to_package_and_no_shim_is_unsupported(self):
        # A copy of the package with the library bundled inside it and no shim anywhere
        # near: found without EXECDRIVER_LIB; starting a task is then UnsupportedError.
        pkg = os.path.join(self.tmp, "site", "execdriver")
        shutil.copytree(os.path.join(PYDIR, "execdriver"), pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        shutil.copy(self.lib, os.path.join(pkg, "libexecdriver.so"))
        code = (
            "import execdriver, json\n"
            "d = execdriver.Driver()\n"
            "print(d.path)\n"
            "try:\n"
            "    d.start({'name': 'u', 'driver': 'raw_exec', 'config': {'command': '/bin/true'}})\n"
            "except execdriver.UnsupportedError as e:\n"
            "    print(json.dumps([type(e).__name__, e.status, e.code, e.message]))\n"
        )
        r = self.run_child(code)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], os.path.join(pkg, "libexecdriver.so"))
        self.assertIn('["UnsupportedError", 4, "unsupported"', lines[1])
        self.assertIn("execdriver-shim", lines[1])
        # $EXECDRIVER_LIB beats the bundled copy.
        r = self.run_child("import execdriver; print(execdriver.Driver().path)", env_lib=self.lib)
        self.assertEqual(r.stdout.strip(), self.lib, r.stderr)

    def test_source_install_without_library_says_what_to_do(self):
        # What `pip install ./python` installs: the Python code, no library. Driver()
        # with neither a path nor $EXECDRIVER_LIB fails, naming both and the wheel.
        pkg = os.path.join(self.tmp, "site", "execdriver")
        shutil.copytree(os.path.join(PYDIR, "execdriver"), pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "execdriver-shim"))
        code = (
            "import execdriver\n"
            "try:\n"
            "    print('loaded', execdriver.Driver().path)\n"
            "except OSError as e:\n"
            "    print(e)\n"
        )
        # Nothing on the loader's path either (cargo test puts target/ there).
        r = self.run_child(code, drop=("LD_LIBRARY_PATH",))
        self.assertEqual(r.returncode, 0, r.stderr)
        for what in ("libexecdriver.so", "Driver(path=...)", "EXECDRIVER_LIB",
                     "python3 python/build_wheel.py", "no library inside"):
            self.assertIn(what, r.stdout)


class Docstrings(unittest.TestCase):
    """Every public member of the package, and every public method (and __init__,
    __enter__, __exit__) of its classes, has a docstring."""

    def test_every_public_member_has_a_docstring(self):
        missing = []
        for name in execdriver.__all__:
            member = getattr(execdriver, name)
            if inspect.isfunction(member):
                if not inspect.getdoc(member):
                    missing.append(name)
            if not inspect.isclass(member):
                continue
            if not (member.__doc__ or "").strip():
                missing.append(name)
            for attr, value in vars(member).items():
                if attr.startswith("_") and attr not in ("__init__", "__enter__", "__exit__"):
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if not (inspect.isfunction(value) or isinstance(value, property)):
                    continue
                if not (value.__doc__ or "").strip():
                    missing.append("%s.%s" % (name, attr))
        self.assertEqual(missing, [])
        # The ones the package defines are among those checked.
        for cls, attr in ((Driver, "__init__"), (Task, "__exit__"), (ExecSession, "__enter__"),
                          (DriverError, "__init__"), (Task, "logs")):
            self.assertIn(attr, vars(cls))


if __name__ == "__main__":
    unittest.main()
