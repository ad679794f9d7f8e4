/*
 * start_bench: timer for bench/start.sh and bench/pss.sh (issue 2 item 12, issue 3
 * "Performance"). Not a test: it prints numbers and asserts nothing about them.
 *
 *   start_bench bench N WORKDIR [BWRAP]
 *       N iterations each of: posix_spawn(/bin/true)+waitpid, raw_exec through the
 *       library (driver_start -> driver_wait; then driver_destroy), exec through the
 *       library (only when driver_fingerprint says driver.exec = "1") and, when BWRAP is
 *       given, posix_spawn of bwrap ... /bin/true + waitpid. The methods are interleaved
 *       and their order rotates each iteration to spread drift over all of them.
 *   start_bench pss WORKDIR
 *       Starts `sleep 30` as raw_exec (and exec when available), reads the supervisor's
 *       Pss/Rss from /proc/<pid>/smaps_rollup, stops and destroys the task.
 *
 * The library is dlopen'ed from $EXECDRIVER_LIB (default target/release/libexecdriver.so);
 * the supervisor is found next to it. Data goes to $EXECDRIVER_DATA_DIR (set by the
 * scripts to a temp dir).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef int32_t (*op_fn)(const char *, char **);
typedef void (*free_fn)(char *);

static op_fn d_start, d_wait, d_destroy, d_stop, d_fingerprint, d_configure;
static free_fn d_free;

static void load(void) {
    const char *path = getenv("EXECDRIVER_LIB");
    if (!path || !*path) path = "target/release/libexecdriver.so";
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "start_bench: dlopen %s: %s\n", path, dlerror());
        exit(2);
    }
#define SYM(var, name, type)                                                  \
    do {                                                                      \
        var = (type)dlsym(h, name);                                           \
        if (!var) {                                                           \
            fprintf(stderr, "start_bench: missing symbol %s\n", name);        \
            exit(2);                                                          \
        }                                                                     \
    } while (0)
    SYM(d_start, "driver_start", op_fn);
    SYM(d_wait, "driver_wait", op_fn);
    SYM(d_destroy, "driver_destroy", op_fn);
    SYM(d_stop, "driver_stop", op_fn);
    SYM(d_fingerprint, "driver_fingerprint", op_fn);
    SYM(d_configure, "driver_configure", op_fn);
    SYM(d_free, "driver_free", free_fn);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Calls op, dies with the response on a non-OK status unless allow_fail. */
static int call(op_fn op, const char *name, const char *req, char **resp_out) {
    char *resp = NULL;
    int32_t st = op(req, &resp);
    if (st != 0) {
        fprintf(stderr, "start_bench: %s(%s) -> status %d: %s\n", name, req, st,
                resp ? resp : "(null)");
        if (resp) d_free(resp);
        exit(3);
    }
    if (resp_out)
        *resp_out = resp;
    else if (resp)
        d_free(resp);
    return st;
}

/* Integer value of "key": N in a flat JSON text (enough for our responses). */
static long json_int(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ') p++;
    return strtol(p, NULL, 10);
}

/* ---- the measured operations ---- */

static const char *workdir;
static unsigned long seq;

static void spawn_and_wait(char *const argv[]) {
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(stderr, "start_bench: posix_spawn %s: %s\n", argv[0], strerror(rc));
        exit(4);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "start_bench: %s exited with status 0x%x\n", argv[0], status);
        exit(4);
    }
}

/* driver_start + driver_wait (returns µs of that) and driver_destroy (*cycle_us);
 * *start_us is the driver_start call alone (until the command has exec'd). */
static double driver_cycle(const char *driver, double *cycle_us, double *start_us) {
    char id[64], req[1024];
    unsigned long n = seq++;
    snprintf(id, sizeof id, "b-%s-%lu", driver, n);
    snprintf(req, sizeof req,
             "{\"id\":\"%s\",\"name\":\"b\",\"driver\":\"%s\",\"alloc_dir\":\"%s/alloc-%s-%lu\","
             "\"config\":{\"command\":\"/bin/true\"}}",
             id, driver, workdir, driver, n);
    char wreq[128], dreq[128];
    snprintf(wreq, sizeof wreq, "{\"task_id\":\"%s\"}", id);
    snprintf(dreq, sizeof dreq, "{\"task_id\":\"%s\"}", id);

    char *resp;
    double t0 = now_us();
    call(d_start, "driver_start", req, NULL);
    double ts = now_us();
    call(d_wait, "driver_wait", wreq, &resp);
    double t1 = now_us();
    call(d_destroy, "driver_destroy", dreq, NULL);
    double t2 = now_us();
    if (json_int(resp, "exit_code") != 0) {
        fprintf(stderr, "start_bench: %s task exited badly: %s\n", driver, resp);
        exit(5);
    }
    d_free(resp);
    *cycle_us = t2 - t0;
    *start_us = ts - t0;
    return t1 - t0;
}

/* Busy CPU time of the whole machine so far, in microseconds: every process and kernel
 * thread (deferred work such as cgroup release and RCU callbacks included), from the
 * "cpu" line of /proc/stat (user + nice + system + irq + softirq; not idle, iowait or
 * steal). Its unit is the clock tick (10 ms), so it is read over many operations. */
static double machine_busy_us(void) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                     &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got < 7) return 0;
    double ticks = (double)(v[0] + v[1] + v[2] + v[5] + v[6]);
    return ticks * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p) {
    qsort(v, n, sizeof *v, cmp_double);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

enum {
    M_SPAWN,
    M_RAW,
    M_RAW_START,
    M_RAW_CYCLE,
    M_EXEC,
    M_EXEC_START,
    M_EXEC_CYCLE,
    M_BWRAP,
    M_COUNT
};
static const char *names[M_COUNT] = {
    "posix_spawn /bin/true", "raw_exec start->wait", "  (driver_start call)", "raw_exec +destroy",
    "exec start->wait",      "  (driver_start call)", "exec +destroy",        "bwrap /bin/true",
};

static int exec_available(char *why, size_t whylen) {
    char *resp = NULL;
    int st = d_fingerprint(NULL, &resp);
    int ok = st == 0 && resp && strstr(resp, "\"driver.exec\":\"1\"") != NULL;
    if (!ok) snprintf(why, whylen, "%s", resp ? resp : "(no response)");
    if (resp) d_free(resp);
    return ok;
}

/* What one mkdir+rmdir costs in the work dir: every task start creates about ten
 * directories (Nomad's layout), so the data dir's filesystem shows in the numbers. */
static double mkdir_cost(void) {
    enum { K = 100 };
    double v[K];
    char p[512];
    for (int i = 0; i < K; i++) {
        snprintf(p, sizeof p, "%s/mkdir-probe-%d", workdir, i);
        double t0 = now_us();
        if (mkdir(p, 0755) != 0 || rmdir(p) != 0) return -1;
        v[i] = now_us() - t0;
    }
    qsort(v, K, sizeof *v, cmp_double);
    return v[K / 2];
}

/* START_BENCH_CONFIG='{"prestart_supervisor":false}': driver_configure first. */
static void configure_from_env(void) {
    const char *conf = getenv("START_BENCH_CONFIG");
    if (conf && *conf) {
        call(d_configure, "driver_configure", conf, NULL);
        printf("driver_configure %s\n", conf);
    }
}

/* One operation of method m; returns its time (start->wait for the driver, which also
 * gives the full cycle and the driver_start call's time). */
static double one_op(int m, char **true_argv, char **bwrap_argv, double *cyc, double *st) {
    double t0;
    switch (m) {
    case M_SPAWN:
        t0 = now_us();
        spawn_and_wait(true_argv);
        return now_us() - t0;
    case M_BWRAP:
        t0 = now_us();
        spawn_and_wait(bwrap_argv);
        return now_us() - t0;
    case M_RAW:
        return driver_cycle("raw_exec", cyc, st);
    case M_EXEC:
        return driver_cycle("exec", cyc, st);
    }
    return 0;
}

static int bench(int n, const char *bwrap) {
    char why[2048] = "";
    configure_from_env();
    printf("work dir %s: mkdir+rmdir median %.0f us\n", workdir, mkdir_cost());
    int have_exec = exec_available(why, sizeof why);
    if (!have_exec)
        printf("exec: SKIPPED: driver_fingerprint does not report driver.exec = \"1\": %s\n", why);

    char *true_argv[] = {"/bin/true", NULL};
    char *bwrap_argv[] = {(char *)bwrap, "--ro-bind", "/usr", "/usr", "--ro-bind", "/bin", "/bin",
                          "--ro-bind", "/lib", "/lib", "--ro-bind", "/lib64", "/lib64",
                          "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--proc", "/proc",
                          "--dev", "/dev", "/bin/true", NULL};

    /* START_BENCH_SKIP=raw,exec leaves those methods out (posix_spawn always runs). */
    const char *skip = getenv("START_BENCH_SKIP");
    if (!skip) skip = "";
    int kinds[4], nk = 0;
    kinds[nk++] = M_SPAWN;
    if (!strstr(skip, "raw")) kinds[nk++] = M_RAW;
    if (have_exec && !strstr(skip, "exec")) kinds[nk++] = M_EXEC;
    if (bwrap) kinds[nk++] = M_BWRAP;
    int ran[M_COUNT] = {0};
    for (int k = 0; k < nk; k++) ran[kinds[k]] = 1;

    double *v[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) v[m] = calloc(n, sizeof(double));

    /* START_BENCH_GAP_US: idle time before every measured operation (not timed), to see
     * starts that are sparse as on a real node rather than back to back. */
    const char *gap_env = getenv("START_BENCH_GAP_US");
    long gap = gap_env ? atol(gap_env) : 0;
    int warm = n / 20 < 3 ? 3 : n / 20;
    for (int it = -warm; it < n; it++) {
        for (int k = 0; k < nk; k++) {
            int m = kinds[((it < 0 ? 0 : it) + k) % nk];
            double cyc = 0, st = 0, dt = 0;
            if (gap > 0) usleep(gap);
            dt = one_op(m, true_argv, bwrap_argv, &cyc, &st);
            if (it < 0) continue; /* warm-up */
            v[m][it] = dt;
            if (m == M_RAW) v[M_RAW_CYCLE][it] = cyc, v[M_RAW_START][it] = st;
            if (m == M_EXEC) v[M_EXEC_CYCLE][it] = cyc, v[M_EXEC_START][it] = st;
        }
    }

    int present[M_COUNT] = {1,           ran[M_RAW],  ran[M_RAW],  ran[M_RAW],
                            ran[M_EXEC], ran[M_EXEC], ran[M_EXEC], ran[M_BWRAP]};
    double med[M_COUNT], p90[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) {
        if (!present[m]) continue;
        med[m] = pct(v[m], n, 0.5);
        p90[m] = pct(v[m], n, 0.9);
    }
    printf("\n%d iterations per method (+%d warm-up), interleaved, times in microseconds", n,
           warm);
    if (gap > 0) printf(", %ld us idle before each", gap);
    printf("\n");
    printf("%-24s %10s %10s %10s %10s %10s\n", "method", "median", "p90", "min", "x spawn",
           "x spawn p90");
    for (int m = 0; m < M_COUNT; m++) {
        if (!present[m]) continue;
        printf("%-24s %10.0f %10.0f %10.0f %9.2fx %9.2fx\n", names[m], med[m], p90[m], v[m][0],
               med[m] / med[M_SPAWN], p90[m] / p90[M_SPAWN]);
    }
    /* CPU: each method alone, back to back (start+wait+destroy for the driver), after
     * the timed runs, measured as the whole machine's busy time per operation. */
    printf("\nCPU per operation, whole machine (/proc/stat busy time over %d back-to-back\n"
           "operations of each method alone; start+wait+destroy for the driver, including its\n"
           "supervisors, spares and the kernel's deferred work; idle machine assumed):\n", n);
    const int cpu_of[] = {M_SPAWN, M_RAW, M_EXEC, M_BWRAP};
    const char *cpu_name[] = {"posix_spawn", "raw_exec", "exec", "bwrap"};
    double cpu[M_COUNT] = {0};
    for (int k = 0; k < 4; k++) {
        int m = cpu_of[k];
        if (!ran[m]) continue;
        double cyc, st;
        for (int i = 0; i < warm; i++) one_op(m, true_argv, bwrap_argv, &cyc, &st);
        double b0 = machine_busy_us(), w0 = now_us();
        for (int i = 0; i < n; i++) one_op(m, true_argv, bwrap_argv, &cyc, &st);
        double busy = machine_busy_us() - b0, wall = now_us() - w0;
        cpu[m] = busy / n;
        printf("  %-12s %7.0f us  %5.2fx   (%.0f us wall per op, %.0f%% of %ld CPUs busy)\n",
               cpu_name[k], cpu[m], cpu[m] / cpu[M_SPAWN], wall / n,
               100.0 * busy / (wall * sysconf(_SC_NPROCESSORS_ONLN)),
               sysconf(_SC_NPROCESSORS_ONLN));
    }
    printf("\ntargets: raw_exec <= 2.0x, exec <= 2.5x posix_spawn (start->wait medians)\n");
    return 0;
}

/* ---- PSS of a sleeping task's supervisor ---- */

static void read_rollup(long pid, long *pss, long *rss, long *uss, long *anon) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    *pss = *rss = -1;
    *uss = 0;
    *anon = -1;
    if (!f) {
        fprintf(stderr, "start_bench: %s: %s\n", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Pss:", 4)) *pss = strtol(line + 4, NULL, 10);
        if (!strncmp(line, "Rss:", 4)) *rss = strtol(line + 4, NULL, 10);
        if (!strncmp(line, "Anonymous:", 10)) *anon = strtol(line + 10, NULL, 10);
        if (!strncmp(line, "Private_Clean:", 14)) *uss += strtol(line + 14, NULL, 10);
        if (!strncmp(line, "Private_Dirty:", 14)) *uss += strtol(line + 14, NULL, 10);
    }
    fclose(f);
}

/* START_BENCH_PSS_DUMP=1: Pss per mapping of /proc/<pid>/smaps (where the KiB go). */
static void dump_smaps(long pid) {
    char path[64], line[512], name[512] = "";
    snprintf(path, sizeof path, "/proc/%ld/smaps", pid);
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[8];
        int off = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &a, &b, perms, &off) == 3) {
            line[strcspn(line, "\n")] = 0;
            snprintf(name, sizeof name, "%s %-4s %6lu KiB vsz  %s", "", perms, (b - a) / 1024,
                     off > 0 ? line + off : "");
        } else if (!strncmp(line, "Pss:", 4)) {
            long kb = strtol(line + 4, NULL, 10);
            if (kb > 0) printf("    Pss %5ld KiB %s\n", kb, name);
        }
    }
    fclose(f);
}

static void pss_one(const char *driver) {
    char id[64], req[1024], sreq[160], dreq[128];
    snprintf(id, sizeof id, "pss-%s-%d", driver, (int)getpid());
    snprintf(req, sizeof req,
             "{\"id\":\"%s\",\"name\":\"p\",\"driver\":\"%s\",\"alloc_dir\":\"%s/alloc-pss-%s\","
             "\"config\":{\"command\":\"/bin/sleep\",\"args\":[\"30\"]}}",
             id, driver, workdir, driver);
    char *resp;
    call(d_start, "driver_start", req, &resp);
    long pid = json_int(resp, "pid");
    d_free(resp);
    /* Let it settle: the supervisor hands back its start-up pages after a second idle. */
    usleep(1500 * 1000);
    long pss, rss, uss, anon;
    read_rollup(pid, &pss, &rss, &uss, &anon);
    char exe[64], target[512] = "";
    snprintf(exe, sizeof exe, "/proc/%ld/exe", pid);
    ssize_t l = readlink(exe, target, sizeof target - 1);
    if (l > 0) target[l] = 0;
    printf("%-9s supervisor pid %-7ld Pss %5ld KiB (target <= 1024: %s)  Rss %5ld KiB  "
           "USS %5ld KiB  anon %4ld KiB  %s\n",
           driver, pid, pss, pss >= 0 && pss <= 1024 ? "met" : "NOT met", rss, uss, anon, target);
    const char *dump = getenv("START_BENCH_PSS_DUMP");
    if (dump && *dump == '1') dump_smaps(pid);
    snprintf(sreq, sizeof sreq, "{\"task_id\":\"%s\",\"timeout_ms\":2000}", id);
    call(d_stop, "driver_stop", sreq, NULL);
    snprintf(dreq, sizeof dreq, "{\"task_id\":\"%s\"}", id);
    call(d_destroy, "driver_destroy", dreq, NULL);
}

/* The idle spare supervisors (prestart_supervisor): our children running the shim, and
 * an exec spare's waiting command process. */
static void pss_spares(void) {
    char path[300], target[512], line[512];
    DIR *proc = opendir("/proc");
    if (!proc) return;
    struct dirent *e;
    while ((e = readdir(proc))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        long ppid = -1;
        if (fgets(line, sizeof line, f)) {
            char *p = strrchr(line, ')');
            if (p) sscanf(p + 2, "%*c %ld", &ppid);
        }
        fclose(f);
        if (ppid != (long)getpid()) continue;
        snprintf(path, sizeof path, "/proc/%ld/exe", pid);
        ssize_t l = readlink(path, target, sizeof target - 1);
        if (l <= 0) continue;
        target[l] = 0;
        if (!strstr(target, "execdriver-shim")) continue;
        long pss, rss, uss, anon;
        read_rollup(pid, &pss, &rss, &uss, &anon);
        /* The fork server that makes the spares is named execdriver-fork. */
        int mother = strstr(line, "(execdriver-fork)") != NULL;
        printf("%-21s pid %-7ld Pss %5ld KiB  Rss %5ld KiB  USS %5ld KiB\n",
               mother ? "spares' fork server" : "idle spare supervisor", pid, pss, rss, uss);
        if (mother) continue;
        /* An exec spare's command process, waiting with it (its only child). */
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", pid, pid);
        f = fopen(path, "r");
        long kid = -1;
        if (f) {
            if (fscanf(f, "%ld", &kid) != 1) kid = -1;
            fclose(f);
        }
        if (kid > 0) {
            read_rollup(kid, &pss, &rss, &uss, &anon);
            printf("  its waiting command process pid %-7ld Pss %5ld KiB  Rss %5ld KiB  USS %5ld "
                   "KiB\n", kid, pss, rss, uss);
        }
    }
    closedir(proc);
}

static int pss(void) {
    char why[2048] = "";
    configure_from_env();
    pss_one("raw_exec");
    if (exec_available(why, sizeof why))
        pss_one("exec");
    else
        printf("exec: SKIPPED: driver_fingerprint does not report driver.exec = \"1\": %s\n", why);
    pss_spares();
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "bench")) {
        int n = atoi(argv[2]);
        if (n < 1) n = 1;
        workdir = argv[3];
        load();
        return bench(n, argc >= 5 && argv[4][0] ? argv[4] : NULL);
    }
    if (argc >= 3 && !strcmp(argv[1], "pss")) {
        workdir = argv[2];
        load();
        return pss();
    }
    fprintf(stderr, "usage: %s bench N WORKDIR [BWRAP] | %s pss WORKDIR\n", argv[0], argv[0]);
    return 2;
}
