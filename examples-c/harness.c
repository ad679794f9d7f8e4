/*
 * harness: a small C host for libexecdriver.so.
 *
 *   harness [-l LIB] [-q] [-p] fingerprint        print the fingerprint JSON
 *   harness [-l LIB] [-q] [-p] run JOB.json       start the task, wait for it, print the
 *                                                  wait JSON, destroy it, exit with its code
 *   harness [-l LIB] call OP [JSON]                call driver_OP once, print the response,
 *                                                  exit with the DriverStatus
 *   harness [-l LIB] version                       print the library and ABI versions
 *   harness [-l LIB] start JOB.json HANDLEFILE     start the task, write its handle JSON to
 *                                                  HANDLEFILE, print the start response
 *   harness [-l LIB] wait|stop HANDLEFILE [TIMEOUT_MS]
 *   harness [-l LIB] inspect|stats HANDLEFILE      recover the task from HANDLEFILE, then
 *                                                  call driver_OP on it and print the JSON
 *   harness [-l LIB] [-p] destroy HANDLEFILE       recover, then destroy (force; -p: purge)
 *   harness [-l LIB] exec [-it|-i] HANDLEFILE CMD [ARG...]
 *                                                  recover, then run CMD inside the task
 *   harness [-l LIB] logs [-f] [-stderr] HANDLEFILE  recover, then copy the task's stdout
 *                                                  (or stderr) to stdout; -f: follow it
 *                                                  until the task ends
 *
 * -v LEVEL (error, warn, info, debug or trace; before the command): the library's own
 * log records of that level and more severe are printed on stderr as they come, through
 * driver_set_log_callback(), as "execdriver LEVEL: message".
 *
 * The library is loaded with dlopen() from: -l PATH, else $EXECDRIVER_LIB, else
 * ./target/debug/libexecdriver.so (the repository root after `cargo build`), then plain
 * "libexecdriver.so" (the dynamic loader's search path). The library runs the supervisor
 * named by $EXECDRIVER_SHIM, else the execdriver-shim next to itself, else
 * <libdir>/../libexec/execdriver/execdriver-shim (an install); it keeps its state under
 * $EXECDRIVER_DATA_DIR (docs/configuration.md, data_dir). The operations and their JSON:
 * docs/api.md.
 *
 * `run`: the task is started with "wait_fd": true and its exit waited for with poll()
 * on that fd (then driver_wait answers at once), as a host waiting on many tasks would.
 * After the task exits the harness copies the task's stdout log to its stdout
 * and the stderr log to its stderr (skip with -q), then prints the wait object as one
 * JSON line on stdout. The task is destroyed afterwards (-p also purges its directory).
 * Exit status: the task's exit_code (128+N when signal N killed it). When the library
 * cannot be loaded, on bad usage, or when a driver call fails, the harness prints the
 * error (the driver's error JSON and status) on stderr and exits with 2.
 *
 * Step by step (each step a separate process, as a host restarting between calls would
 * be): `start` leaves the task running and stores its handle; `wait`, `stop`, `inspect`,
 * `stats` and `destroy` first call driver_recover with that handle (recovering a task that is
 * still registered is not an error), then the operation on its task_id. TIMEOUT_MS
 * (wait: how long to wait, default forever; stop: the grace period before SIGKILL,
 * default the task's kill_timeout_ms). They print the response JSON on stdout and exit
 * 0; when a driver call fails they print its error JSON on stdout, a message on stderr,
 * and exit with its DriverStatus (e.g. 3 when `wait` times out while the task runs).
 *
 * `exec`: without a flag, driver_exec captures the output; the harness prints the
 * response JSON and exits with the command's exit code. `-i` (stdin and streamed
 * output on pipes) and `-it` (a terminal: for a shell, `harness exec -it H /bin/sh`)
 * use the interactive form: the harness copies its stdin to the command and the
 * command's output to its stdout (and stderr, with -i) as it comes, until the command's
 * output ends, then waits for it with driver_exec_wait and exits with its exit code
 * (128+N for signal N). With -it and a terminal on stdin, that terminal is put in raw
 * mode for the session (every key goes to the command: ^C is the command's) and
 * restored afterwards, its size is the command's from the start, and each SIGWINCH
 * becomes a driver_exec_resize. The session fds are the harness's: it closes them.
 *
 * Every response is released with driver_free().
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "execdriver.h"

#define HARNESS_FAIL 2

typedef int32_t (*op_fn)(const char *request_json, char **response_json);
typedef void (*free_fn)(char *response_json);
typedef uint32_t (*abi_fn)(void);
typedef const char *(*version_fn)(void);

static void *lib;
static free_fn p_free;
static int quiet;
static int purge;

typedef const char *(*status_str_fn)(int32_t);
/* driver_status_str(): a status as text ("timed out"), static in the library. */
static status_str_fn status_str;

static void *sym(const char *name) {
    void *p;
    dlerror();
    p = dlsym(lib, name);
    if (p == NULL) {
        const char *e = dlerror();
        fprintf(stderr, "harness: %s not found in the library: %s\n", name, e ? e : "NULL");
        exit(HARNESS_FAIL);
    }
    return p;
}

/* dlsym returns void *; converting it to a function pointer is what POSIX requires to work. */
static op_fn op(const char *name) {
    op_fn f;
    void *p = sym(name);
    memcpy(&f, &p, sizeof f);
    return f;
}

static void load(const char *path) {
    const char *tried[4];
    int n = 0;
    if (path != NULL) {
        tried[n++] = path;
    } else {
        const char *env = getenv("EXECDRIVER_LIB");
        if (env != NULL && *env != '\0') {
            tried[n++] = env;
        } else {
            tried[n++] = "./target/debug/libexecdriver.so";
            tried[n++] = "libexecdriver.so";
        }
    }
    for (int i = 0; i < n; i++) {
        lib = dlopen(tried[i], RTLD_NOW | RTLD_LOCAL);
        if (lib != NULL)
            break;
        fprintf(stderr, "harness: dlopen(%s): %s\n", tried[i], dlerror());
    }
    if (lib == NULL) {
        fprintf(stderr, "harness: cannot load libexecdriver.so; pass -l PATH or set EXECDRIVER_LIB\n");
        exit(HARNESS_FAIL);
    }
    {
        abi_fn abi;
        void *p = sym("driver_abi_version");
        memcpy(&abi, &p, sizeof abi);
        if (abi() != 1) {
            fprintf(stderr, "harness: library has C ABI %u, this harness speaks 1\n", abi());
            exit(HARNESS_FAIL);
        }
        p = sym("driver_free");
        memcpy(&p_free, &p, sizeof p_free);
        p = sym("driver_status_str");
        memcpy(&status_str, &p, sizeof status_str);
    }
}

static const char *const log_levels[] = {"off", "error", "warn", "info", "debug", "trace"};

/* The log callback: called on one thread of the library's, a record at a time. */
static void print_record(void *user_data, int32_t level, const char *message) {
    (void)user_data;
    fprintf(stderr, "execdriver %s: %s\n",
            level >= 0 && level <= DRIVER_LOG_TRACE ? log_levels[level] : "?", message);
}

typedef int32_t (*set_log_fn)(int32_t, DriverLogCallback, void *);
static set_log_fn set_log;

/* Records are delivered on a thread of the library's, shortly after they happen:
 * removing the callback delivers those still queued first. */
static void flush_log(void) {
    set_log(DRIVER_LOG_OFF, NULL, NULL);
}

static void log_to_stderr(const char *level_name) {
    void *p = sym("driver_set_log_callback");
    int32_t level = -1;
    for (int32_t l = 0; l <= DRIVER_LOG_TRACE; l++)
        if (strcmp(level_name, log_levels[l]) == 0)
            level = l;
    if (level < 0) {
        fprintf(stderr, "harness: -v takes off, error, warn, info, debug or trace, not %s\n",
                level_name);
        exit(HARNESS_FAIL);
    }
    memcpy(&set_log, &p, sizeof set_log);
    if (set_log(level, print_record, NULL) != DRIVER_OK) {
        fprintf(stderr, "harness: driver_set_log_callback refused level %s\n", level_name);
        exit(HARNESS_FAIL);
    }
    atexit(flush_log);
}

/* Calls driver_<name>; on failure prints the error and exits unless `soft`. The caller
 * frees *resp with driver_free. */
static int32_t call(const char *name, const char *req, char **resp, int soft) {
    int32_t st = op(name)(req, resp);
    if (st != DRIVER_OK && !soft) {
        fprintf(stderr, "harness: %s failed with status %d (%s): %s\n", name, (int)st,
                status_str(st), *resp ? *resp : "(no response)");
        p_free(*resp);
        *resp = NULL;
        exit(HARNESS_FAIL);
    }
    return st;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (f == NULL) {
        fprintf(stderr, "harness: cannot open %s: %s\n", path, strerror(errno));
        exit(HARNESS_FAIL);
    }
    for (;;) {
        size_t got;
        if (cap - len < 4096) {
            char *nb;
            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                fprintf(stderr, "harness: out of memory\n");
                exit(HARNESS_FAIL);
            }
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "harness: cannot read %s\n", path);
        exit(HARNESS_FAIL);
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* Finds `"key":` at the top of a compact JSON object (the library emits no spaces) and
 * returns a pointer just after the colon, or NULL. Good enough for the driver's replies. */
static const char *find_key(const char *json, const char *key) {
    size_t kl = strlen(key);
    const char *p = json;
    while ((p = strchr(p, '"')) != NULL) {
        if (strncmp(p + 1, key, kl) == 0 && p[1 + kl] == '"') {
            const char *q = p + 2 + kl;
            while (*q == ' ')
                q++;
            if (*q == ':') {
                q++;
                while (*q == ' ')
                    q++;
                return q;
            }
        }
        p++;
    }
    return NULL;
}

/* Copies the raw contents of the JSON string value of `key` (escapes kept, so it can be
 * pasted back into JSON). Returns a malloc'd string or NULL. */
static char *string_value(const char *json, const char *key) {
    const char *v = find_key(json, key), *e;
    char *out;
    if (v == NULL || *v != '"')
        return NULL;
    v++;
    for (e = v; *e != '\0' && *e != '"'; e++)
        if (*e == '\\' && e[1] != '\0')
            e++;
    out = malloc((size_t)(e - v) + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, v, (size_t)(e - v));
    out[e - v] = '\0';
    return out;
}

static long int_value(const char *json, const char *key, long dflt) {
    const char *v = find_key(json, key);
    char *end;
    long n;
    if (v == NULL)
        return dflt;
    n = strtol(v, &end, 10);
    return end == v ? dflt : n;
}

/* Copies <alloc_dir>/alloc/logs/<name>.<stream>.N (N = 0, 1, ...) to `out`. task_dir is
 * <alloc_dir>/<name>; a JSON-escaped path (rare) is skipped. */
static void copy_logs(const char *task_dir, const char *stream, FILE *out) {
    const char *slash = strrchr(task_dir, '/');
    char path[4096];
    int found = 0;
    if (slash == NULL || strchr(task_dir, '\\') != NULL)
        return;
    for (int i = 0; i < 1000; i++) {
        FILE *f;
        char buf[8192];
        size_t n;
        int w = snprintf(path, sizeof path, "%.*s/alloc/logs/%s.%s.%d", (int)(slash - task_dir),
                         task_dir, slash + 1, stream, i);
        if (w < 0 || (size_t)w >= sizeof path)
            return;
        f = fopen(path, "rb");
        if (f == NULL) {
            if (found)
                break;
            continue;
        }
        found = 1;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, out);
        fclose(f);
    }
    fflush(out);
}

static int cmd_fingerprint(void) {
    char *resp = NULL;
    call("driver_fingerprint", NULL, &resp, 0);
    printf("%s\n", resp);
    p_free(resp);
    return 0;
}

static int cmd_version(void) {
    version_fn v;
    abi_fn a;
    void *p = sym("driver_version");
    memcpy(&v, &p, sizeof v);
    p = sym("driver_abi_version");
    memcpy(&a, &p, sizeof a);
    printf("libexecdriver %s, C ABI %u\n", v(), a());
    return 0;
}

static int cmd_call(const char *opname, const char *req) {
    char name[64], *resp = NULL;
    int32_t st;
    if (snprintf(name, sizeof name, "driver_%s", opname) >= (int)sizeof name) {
        fprintf(stderr, "harness: operation name too long\n");
        return HARNESS_FAIL;
    }
    st = call(name, req, &resp, 1);
    printf("%s\n", resp ? resp : "null");
    p_free(resp);
    return (int)st;
}

static int cmd_run(const char *job_path) {
    char *job = read_file(job_path), *resp = NULL, *id, *task_dir, *req, *open_brace;
    long code, sig, wait_fd = -1;
    size_t rl;

    /* The exit is waited for on a wait fd with poll(), as a host with many tasks would
     * (one poll or epoll over all of them, no thread each): "wait_fd": true goes into
     * the job unless it says otherwise. */
    open_brace = strchr(job, '{');
    if (open_brace != NULL && strstr(job, "\"wait_fd\"") == NULL) {
        size_t n = strlen(job) + 32;
        char *with = malloc(n);
        if (with == NULL) {
            fprintf(stderr, "harness: out of memory\n");
            return HARNESS_FAIL;
        }
        const char *rest = open_brace + 1 + strspn(open_brace + 1, " \t\r\n");
        snprintf(with, n, "%.*s{\"wait_fd\":true%s%s", (int)(open_brace - job), job,
                 *rest == '}' ? "" : ",", open_brace + 1);
        free(job);
        job = with;
    }
    call("driver_start", job, &resp, 0);
    free(job);
    id = string_value(resp, "task_id");
    task_dir = string_value(resp, "task_dir");
    wait_fd = int_value(resp, "wait_fd", -1);
    p_free(resp);
    resp = NULL;
    if (id == NULL) {
        fprintf(stderr, "harness: driver_start returned no task_id\n");
        free(task_dir);
        return HARNESS_FAIL;
    }

    rl = strlen(id) + 64;
    req = malloc(rl);
    if (req == NULL) {
        fprintf(stderr, "harness: out of memory\n");
        return HARNESS_FAIL;
    }
    if (wait_fd >= 0) {
        /* Readable once the exit is known; then driver_wait answers at once. */
        struct pollfd p = {.fd = (int)wait_fd, .events = POLLIN};
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
        close((int)wait_fd);
        snprintf(req, rl, "{\"task_id\":\"%s\",\"timeout_ms\":0}", id);
    } else {
        /* No timeout_ms: wait forever. */
        snprintf(req, rl, "{\"task_id\":\"%s\"}", id);
    }
    call("driver_wait", req, &resp, 0);

    if (!quiet && task_dir != NULL) {
        fflush(stdout);
        copy_logs(task_dir, "stdout", stdout);
        copy_logs(task_dir, "stderr", stderr);
    }
    printf("%s\n", resp);
    fflush(stdout);
    code = int_value(resp, "exit_code", -1);
    sig = int_value(resp, "signal", 0);
    p_free(resp);
    resp = NULL;

    snprintf(req, rl, "{\"task_id\":\"%s\",\"force\":true,\"purge\":%s}", id,
             purge ? "true" : "false");
    call("driver_destroy", req, &resp, 0);
    p_free(resp);
    free(req);
    free(id);
    free(task_dir);

    if (code < 0)
        code = sig > 0 ? 128 + sig : HARNESS_FAIL;
    return (int)(code & 0xff);
}

/* Copies the JSON object value of `key` (balanced braces, strings skipped). Returns a
 * malloc'd string or NULL. */
static char *object_value(const char *json, const char *key) {
    const char *v = find_key(json, key), *e;
    int depth = 0, in_str = 0;
    char *out;
    if (v == NULL || *v != '{')
        return NULL;
    for (e = v; *e != '\0'; e++) {
        if (in_str) {
            if (*e == '\\' && e[1] != '\0')
                e++;
            else if (*e == '"')
                in_str = 0;
        } else if (*e == '"') {
            in_str = 1;
        } else if (*e == '{') {
            depth++;
        } else if (*e == '}' && --depth == 0) {
            break;
        }
    }
    if (*e != '}')
        return NULL;
    out = malloc((size_t)(e - v) + 2);
    if (out == NULL)
        return NULL;
    memcpy(out, v, (size_t)(e - v) + 1);
    out[e - v + 1] = '\0';
    return out;
}

static int cmd_start(const char *job_path, const char *handle_path) {
    char *job = read_file(job_path), *resp = NULL, *handle;
    FILE *f;
    call("driver_start", job, &resp, 0);
    free(job);
    handle = object_value(resp, "handle");
    if (handle == NULL) {
        fprintf(stderr, "harness: driver_start returned no handle: %s\n", resp);
        p_free(resp);
        return HARNESS_FAIL;
    }
    f = fopen(handle_path, "wb");
    if (f == NULL || fprintf(f, "%s\n", handle) < 0 || fclose(f) != 0) {
        fprintf(stderr, "harness: cannot write %s: %s (the task runs on: %s)\n", handle_path,
                strerror(errno), resp);
        free(handle);
        p_free(resp);
        return HARNESS_FAIL;
    }
    printf("%s\n", resp);
    free(handle);
    p_free(resp);
    return 0;
}

/* Prints a failed call's response on stdout and a message on stderr; returns the status. */
static int soft_fail(const char *name, int32_t st, const char *resp) {
    printf("%s\n", resp ? resp : "null");
    fprintf(stderr, "harness: %s failed with status %d (%s)\n", name, (int)st, status_str(st));
    return (int)st;
}

/* A growable string for requests built from user input. */
struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            fprintf(stderr, "harness: out of memory\n");
            exit(HARNESS_FAIL);
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) {
    buf_add(b, s, strlen(s));
}

/* Appends `s` as a JSON string (quoted, escaped). */
static void buf_json(struct buf *b, const char *s) {
    buf_add(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            buf_str(b, e);
        } else {
            buf_add(b, (const char *)&c, 1);
        }
    }
    buf_add(b, "\"", 1);
}

/* Recovers the task of a handle file into *id (malloc'd). Returns DRIVER_OK, the failed
 * driver_recover's status (its response printed), or -1 for a file that is no handle. */
static int32_t recover_handle(const char *handle_path, char **id) {
    char *handle = read_file(handle_path), *resp = NULL;
    struct buf req = {0};
    int32_t st;
    *id = string_value(handle, "task_id");
    if (*id == NULL) {
        fprintf(stderr, "harness: %s holds no task_id; is it a handle from `harness start`?\n",
                handle_path);
        free(handle);
        return -1;
    }
    buf_str(&req, "{\"handle\":");
    buf_str(&req, handle);
    buf_str(&req, "}");
    free(handle);
    st = call("driver_recover", req.p, &resp, 1);
    free(req.p);
    if (st != DRIVER_OK) {
        soft_fail("driver_recover", st, resp);
        free(*id);
        *id = NULL;
    }
    p_free(resp);
    return st;
}

/* wait|stop|inspect|stats HANDLEFILE [TIMEOUT_MS]: recover, then the operation. */
static int cmd_step(const char *opname, const char *handle_path, const char *timeout) {
    char *resp = NULL, *id, *req, name[32];
    size_t rl;
    int32_t st;
    long tmo = -1;
    if (timeout != NULL) {
        char *end;
        errno = 0;
        tmo = strtol(timeout, &end, 10);
        if (errno != 0 || end == timeout || *end != '\0' || tmo < 0) {
            fprintf(stderr, "harness: TIMEOUT_MS must be a number of milliseconds >= 0\n");
            return HARNESS_FAIL;
        }
    }
    st = recover_handle(handle_path, &id);
    if (st != DRIVER_OK)
        return st < 0 ? HARNESS_FAIL : (int)st;
    rl = strlen(id) + 96;
    req = malloc(rl);
    if (req == NULL) {
        fprintf(stderr, "harness: out of memory\n");
        exit(HARNESS_FAIL);
    }

    if (strcmp(opname, "destroy") == 0)
        snprintf(req, rl, "{\"task_id\":\"%s\",\"force\":true,\"purge\":%s}", id,
                 purge ? "true" : "false");
    else if (timeout != NULL)
        snprintf(req, rl, "{\"task_id\":\"%s\",\"timeout_ms\":%ld}", id, tmo);
    else
        snprintf(req, rl, "{\"task_id\":\"%s\"}", id);
    snprintf(name, sizeof name, "driver_%s", opname);
    st = call(name, req, &resp, 1);
    if (st == DRIVER_OK)
        printf("%s\n", resp);
    else
        st = soft_fail(name, st, resp);
    p_free(resp);
    free(req);
    free(id);
    return (int)st;
}

/* Writes all of buf to fd; -1 when it cannot (the reader is gone). */
static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Copies one read of `from` to `to`; 0 once `from` has ended (EOF, or EIO from a pty
 * whose command is gone) or `to` is gone. */
static int pump(int from, int to) {
    char chunk[16384];
    ssize_t r;
    do
        r = read(from, chunk, sizeof chunk);
    while (r < 0 && errno == EINTR);
    return r > 0 && write_all(to, chunk, (size_t)r) == 0;
}

/* The SIGWINCH handler's pipe: the relay loop polls its read end. */
static int winch_pipe[2] = {-1, -1};

static void on_winch(int sig) {
    int saved = errno;
    ssize_t r = write(winch_pipe[1], "w", 1);
    (void)sig;
    (void)r;
    errno = saved;
}

static int cloexec_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0
               ? -1
               : 0;
}

/* Sends our terminal's size (stdin's) to the session. */
static void forward_size(const char *exec_id) {
    struct winsize ws;
    char req[160], *resp = NULL;
    if (ioctl(0, TIOCGWINSZ, &ws) < 0 || ws.ws_row == 0 || ws.ws_col == 0)
        return;
    snprintf(req, sizeof req, "{\"exec_id\":\"%s\",\"rows\":%u,\"cols\":%u}", exec_id,
             (unsigned)ws.ws_row, (unsigned)ws.ws_col);
    /* A session whose command has just ended refuses it: nothing to do then. */
    call("driver_exec_resize", req, &resp, 1);
    p_free(resp);
}

/* Copies stdin to `in` (closed at stdin's EOF; -1: none) and `out`/`err` to our stdout/
 * stderr (-1: none) until both outputs end (EOF, or EIO from a pty whose command is gone).
 * With `tty`, `in` and `out` are the same pty master, and SIGWINCH is forwarded. */
static void relay(int in, int out, int err, int tty, const char *exec_id) {
    int in_open = in >= 0, out_open = out >= 0, err_open = err >= 0;
    while (out_open || err_open) {
        struct pollfd p[4];
        int n = 0, i_in = -1, i_out = -1, i_err = -1, i_w = -1;
        if (in_open) {
            i_in = n;
            p[n].fd = 0, p[n].events = POLLIN, p[n++].revents = 0;
        }
        if (out_open) {
            i_out = n;
            p[n].fd = out, p[n].events = POLLIN, p[n++].revents = 0;
        }
        if (err_open) {
            i_err = n;
            p[n].fd = err, p[n].events = POLLIN, p[n++].revents = 0;
        }
        if (tty && winch_pipe[0] >= 0) {
            i_w = n;
            p[n].fd = winch_pipe[0], p[n].events = POLLIN, p[n++].revents = 0;
        }
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (i_w >= 0 && p[i_w].revents) {
            char drain[64];
            while (read(winch_pipe[0], drain, sizeof drain) > 0) {
            }
            forward_size(exec_id);
        }
        if (i_out >= 0 && p[i_out].revents)
            out_open = pump(out, 1);
        if (i_err >= 0 && p[i_err].revents)
            err_open = pump(err, 2);
        if (i_in >= 0 && p[i_in].revents && !pump(0, in)) {
            in_open = 0;
            /* A pipe's EOF is closing it; a terminal stays open for the output. */
            if (!tty)
                close(in);
        }
    }
    if (in_open && !tty)
        close(in);
}

/* exec [-it|-i] HANDLEFILE CMD [ARG...] */
static int cmd_exec(const char *mode, const char *handle_path, char **cmd, int ncmd) {
    char *id = NULL, *resp = NULL, *exec_id;
    struct buf req = {0};
    int tty = mode != NULL && strcmp(mode, "-it") == 0, interactive = mode != NULL;
    int32_t st = recover_handle(handle_path, &id);
    long code, sig;
    struct termios saved;
    int raw = 0;
    if (st != DRIVER_OK)
        return st < 0 ? HARNESS_FAIL : (int)st;
    buf_str(&req, "{\"task_id\":");
    buf_json(&req, id);
    free(id);
    buf_str(&req, ",\"command\":");
    buf_json(&req, cmd[0]);
    buf_str(&req, ",\"args\":[");
    for (int i = 1; i < ncmd; i++) {
        if (i > 1)
            buf_str(&req, ",");
        buf_json(&req, cmd[i]);
    }
    buf_str(&req, "]");
    if (tty) {
        struct winsize ws;
        buf_str(&req, ",\"tty\":true");
        if (isatty(0) && ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
            char size[64];
            snprintf(size, sizeof size, ",\"rows\":%u,\"cols\":%u", (unsigned)ws.ws_row,
                     (unsigned)ws.ws_col);
            buf_str(&req, size);
        }
        /* The terminal type is this terminal's; one the library refuses is left out. */
        const char *term = getenv("TERM");
        if (term != NULL && *term != '\0' && strlen(term) <= 64 &&
            strspn(term, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") ==
                strlen(term)) {
            buf_str(&req, ",\"term\":");
            buf_json(&req, term);
        }
    } else if (interactive) {
        buf_str(&req, ",\"stdin\":true");
    }
    buf_str(&req, "}");
    st = call("driver_exec", req.p, &resp, 1);
    free(req.p);
    if (st != DRIVER_OK) {
        int rc = soft_fail("driver_exec", st, resp);
        p_free(resp);
        return rc;
    }
    if (!interactive) {
        printf("%s\n", resp);
        code = int_value(resp, "exit_code", -1);
        p_free(resp);
        return code < 0 ? HARNESS_FAIL : (int)(code & 0xff);
    }
    exec_id = string_value(resp, "exec_id");
    if (tty) {
        int master = (int)int_value(resp, "tty_fd", -1);
        p_free(resp);
        if (isatty(0) && tcgetattr(0, &saved) == 0) {
            struct termios t = saved;
            t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
            t.c_oflag &= ~(tcflag_t)OPOST;
            t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
            t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
            t.c_cflag |= CS8;
            t.c_cc[VMIN] = 1;
            t.c_cc[VTIME] = 0;
            raw = tcsetattr(0, TCSADRAIN, &t) == 0;
        }
        if (pipe(winch_pipe) == 0 && cloexec_nonblock(winch_pipe[0]) == 0 &&
            cloexec_nonblock(winch_pipe[1]) == 0) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_winch;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGWINCH, &sa, NULL);
        }
        relay(master, master, -1, 1, exec_id);
        close(master);
        if (raw)
            tcsetattr(0, TCSADRAIN, &saved);
    } else {
        int in = (int)int_value(resp, "stdin_fd", -1), out = (int)int_value(resp, "stdout_fd", -1),
            err = (int)int_value(resp, "stderr_fd", -1);
        p_free(resp);
        relay(in, out, err, 0, exec_id);
        close(out);
        close(err);
    }
    req.p = NULL, req.len = req.cap = 0;
    buf_str(&req, "{\"exec_id\":");
    buf_json(&req, exec_id != NULL ? exec_id : "");
    buf_str(&req, "}");
    free(exec_id);
    resp = NULL;
    st = call("driver_exec_wait", req.p, &resp, 1);
    free(req.p);
    if (st != DRIVER_OK) {
        int rc = soft_fail("driver_exec_wait", st, resp);
        p_free(resp);
        return rc;
    }
    code = int_value(resp, "exit_code", -1);
    sig = int_value(resp, "signal", 0);
    p_free(resp);
    if (code < 0)
        code = sig > 0 ? 128 + sig : HARNESS_FAIL;
    return (int)(code & 0xff);
}

/* Decodes standard base64 `in` into `out` (room for 3/4 of its length); returns the
 * number of bytes. */
static size_t unbase64(const char *in, size_t len, unsigned char *out) {
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && in[i] != '='; i++) {
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = strchr(a, in[i]);
        if (p == NULL || in[i] == '\0')
            continue;
        acc = (acc << 6) | (unsigned)(p - a);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

/* logs [-f] [-stderr] HANDLEFILE: recover, then copy the task's stream to stdout (exact
 * bytes: base64 on the wire) from its start; with -f, follow it until the task ends. */
static int cmd_logs(int follow, const char *stream, const char *handle_path) {
    char *resp = NULL, *req, *id;
    size_t rl;
    int rc;
    long offset = 0;
    int32_t got = recover_handle(handle_path, &id);
    if (got != DRIVER_OK)
        return got < 0 ? HARNESS_FAIL : (int)got;
    rl = strlen(id) + 160;
    req = malloc(rl);
    if (req == NULL) {
        fprintf(stderr, "harness: out of memory\n");
        exit(HARNESS_FAIL);
    }
    for (;;) {
        int32_t st;
        char *data;
        snprintf(req, rl,
                 "{\"task_id\":\"%s\",\"stream\":\"%s\",\"offset\":%ld,\"follow_ms\":%d}", id,
                 stream, offset, follow ? 10000 : 0);
        st = call("driver_logs", req, &resp, 1);
        if (st != DRIVER_OK) {
            rc = soft_fail("driver_logs", st, resp);
            p_free(resp);
            break;
        }
        data = string_value(resp, "data");
        if (data != NULL) {
            size_t len = strlen(data);
            unsigned char *bytes = malloc(len / 4 * 3 + 3);
            if (bytes == NULL) {
                fprintf(stderr, "harness: out of memory\n");
                exit(HARNESS_FAIL);
            }
            fwrite(bytes, 1, unbase64(data, len, bytes), stdout);
            fflush(stdout);
            free(bytes);
        }
        offset = int_value(resp, "offset", offset);
        rc = 0;
        {
            const char *eof = find_key(resp, "eof");
            int done = eof != NULL && strncmp(eof, "true", 4) == 0;
            int empty = data == NULL || *data == '\0';
            free(data);
            p_free(resp);
            if (done || (!follow && empty))
                break;
        }
    }
    free(req);
    free(id);
    return rc;
}

static void usage(void) {
    fprintf(stderr,
            "usage: harness [-l LIB] [-v LEVEL] [-q] [-p] fingerprint | version | run JOB.json | call OP [JSON]\n"
            "       harness [-l LIB] start JOB.json HANDLEFILE\n"
            "       harness [-l LIB] wait|stop HANDLEFILE [TIMEOUT_MS]\n"
            "       harness [-l LIB] [-p] inspect|stats|destroy HANDLEFILE\n"
            "       harness [-l LIB] exec [-it|-i] HANDLEFILE CMD [ARG...]\n"
            "       harness [-l LIB] logs [-f] [-stderr] HANDLEFILE\n"
            "  -l LIB  library to dlopen (default: $EXECDRIVER_LIB, ./target/debug/libexecdriver.so,\n"
            "          then libexecdriver.so on the loader's path)\n"
            "  -v LEVEL  print the library's own log (error|warn|info|debug|trace) on stderr\n"
            "  -q      run: do not copy the task's logs to stdout/stderr\n"
            "  -p      run, destroy: purge the task's directory when destroying it\n");
    exit(HARNESS_FAIL);
}

int main(int argc, char **argv) {
    const char *libpath = NULL, *log_level = NULL;
    int i = 1, rc;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-l") == 0 && i + 1 < argc)
            libpath = argv[++i];
        else if (strcmp(argv[i], "-v") == 0 && i + 1 < argc)
            log_level = argv[++i];
        else if (strcmp(argv[i], "-q") == 0)
            quiet = 1;
        else if (strcmp(argv[i], "-p") == 0)
            purge = 1;
        else
            usage();
    }
    if (i >= argc)
        usage();
    load(libpath);
    if (log_level != NULL)
        log_to_stderr(log_level);
    if (strcmp(argv[i], "fingerprint") == 0 && i + 1 == argc)
        rc = cmd_fingerprint();
    else if (strcmp(argv[i], "version") == 0 && i + 1 == argc)
        rc = cmd_version();
    else if (strcmp(argv[i], "run") == 0 && i + 2 == argc)
        rc = cmd_run(argv[i + 1]);
    else if (strcmp(argv[i], "call") == 0 && (i + 2 == argc || i + 3 == argc))
        rc = cmd_call(argv[i + 1], i + 3 == argc ? argv[i + 2] : NULL);
    else if (strcmp(argv[i], "start") == 0 && i + 3 == argc)
        rc = cmd_start(argv[i + 1], argv[i + 2]);
    else if ((strcmp(argv[i], "wait") == 0 || strcmp(argv[i], "stop") == 0) &&
             (i + 2 == argc || i + 3 == argc))
        rc = cmd_step(argv[i], argv[i + 1], i + 3 == argc ? argv[i + 2] : NULL);
    else if ((strcmp(argv[i], "inspect") == 0 || strcmp(argv[i], "stats") == 0 ||
              strcmp(argv[i], "destroy") == 0) &&
             i + 2 == argc)
        rc = cmd_step(argv[i], argv[i + 1], NULL);
    else if (strcmp(argv[i], "logs") == 0 && i + 2 <= argc) {
        int follow = 0, j = i + 1;
        const char *stream = "stdout";
        for (; j < argc - 1; j++) {
            if (strcmp(argv[j], "-f") == 0)
                follow = 1;
            else if (strcmp(argv[j], "-stderr") == 0)
                stream = "stderr";
            else
                usage();
        }
        if (j != argc - 1)
            usage();
        rc = cmd_logs(follow, stream, argv[j]);
    }
    else if (strcmp(argv[i], "exec") == 0 && i + 2 < argc &&
             (strcmp(argv[i + 1], "-it") == 0 || strcmp(argv[i + 1], "-i") == 0)) {
        if (i + 3 >= argc)
            usage();
        rc = cmd_exec(argv[i + 1], argv[i + 2], argv + i + 3, argc - i - 3);
    } else if (strcmp(argv[i], "exec") == 0 && i + 2 < argc)
        rc = cmd_exec(NULL, argv[i + 1], argv + i + 2, argc - i - 2);
    else
        usage();
    /* Not dlclose()d: a Rust cdylib keeps thread-locals and threads; unloading it is not
     * supported, and the process is about to exit anyway. */
    return rc;
}
