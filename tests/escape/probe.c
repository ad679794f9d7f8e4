/* The red-team probe: run inside an exec task, it tries one way out of the task's
 * confinement per argument and prints one line per try:
 *   <name> ok <what happened>          the attempt failed as it must
 *   <name> ESCAPED <what happened>     it worked: a hole
 *   <name> = <value>                   a reading for the test to compare
 * Built by the tests with the system's C compiler (tests/escape/mod.rs). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

static void verdict(const char *name, int escaped, const char *what) {
    printf("%s %s %s\n", name, escaped ? "ESCAPED" : "ok", what);
}

/* A call that must fail: ok when it does, with its errno. */
static void must_fail(const char *name, long r) {
    char buf[128];
    if (r < 0) {
        snprintf(buf, sizeof buf, "%s", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
        verdict(name, 0, buf);
    } else {
        snprintf(buf, sizeof buf, "returned %ld", r);
        verdict(name, 1, buf);
    }
}

/* A call that must fail with `want`. */
static void must_fail_with(const char *name, long r, int want) {
    char buf[128];
    if (r < 0 && errno == want) {
        snprintf(buf, sizeof buf, "%s", strerrorname_np(errno));
        verdict(name, 0, buf);
    } else if (r < 0) {
        snprintf(buf, sizeof buf, "failed with %s, not %s", strerrorname_np(errno),
                 strerrorname_np(want));
        verdict(name, 1, buf);
    } else {
        snprintf(buf, sizeof buf, "returned %ld", r);
        verdict(name, 1, buf);
    }
}

static void caps(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) ||
            !strncmp(line, "Seccomp:", 8) || !strncmp(line, "Uid:", 4)) {
            char *colon = strchr(line, ':');
            *colon = 0;
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0;
            printf("%s = %s\n", line, v);
        }
    }
    if (f) fclose(f);
}

/* Reads what `path` gives: ok when it cannot be opened or reads nothing. */
static void reads_nothing(const char *name, const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        verdict(name, 0, strerrorname_np(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n <= 0) {
        verdict(name, 0, "read nothing");
    } else {
        snprintf(buf, sizeof buf, "read %zd bytes", n);
        verdict(name, 1, buf);
    }
}

/* A directory that must be absent or empty. */
static void empty_dir(const char *name, const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        verdict(name, 0, strerrorname_np(errno));
        return;
    }
    struct dirent *e;
    int n = 0;
    char first[300] = "";
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            if (!n) snprintf(first, sizeof first, "holds %s", e->d_name);
            n++;
        }
    }
    closedir(d);
    verdict(name, n > 0, n ? first : "empty");
}

/* Makes a device node in `dir` and opens it. */
static void node(const char *name, const char *dir, mode_t type, int maj, int min) {
    char path[512], buf[600];
    snprintf(path, sizeof path, "%s/probe-node-%d-%d", dir, maj, min);
    unlink(path);
    if (mknod(path, type | 0666, makedev(maj, min)) < 0) {
        snprintf(buf, sizeof buf, "mknod: %s", strerrorname_np(errno));
        verdict(name, 0, buf);
        return;
    }
    int fd = open(path, O_RDWR | O_NONBLOCK);
    int err = errno;
    unlink(path);
    if (fd < 0) {
        snprintf(buf, sizeof buf, "made, open: %s", strerrorname_np(err));
        verdict(name, 0, buf);
    } else {
        close(fd);
        verdict(name, 1, "made and opened");
    }
}

/* A setuid-root copy of a shell in `dir`, as a host user would find it there. */
static void suid_file(const char *name, const char *dir) {
    char path[512], cmd[1100];
    snprintf(path, sizeof path, "%s/probe-suid", dir);
    snprintf(cmd, sizeof cmd, "cp /bin/sh %s 2>/dev/null", path);
    if (system(cmd) != 0) {
        verdict(name, 0, "could not copy a shell");
        return;
    }
    int r1 = chown(path, 0, 0);
    int r2 = chmod(path, 04755);
    struct stat st;
    stat(path, &st);
    int bad = st.st_uid == 0 && (st.st_mode & S_ISUID);
    snprintf(cmd, sizeof cmd, "chown %s, chmod %s: uid %d mode %o", r1 ? "failed" : "worked",
             r2 ? "failed" : "worked", st.st_uid, st.st_mode & 07777);
    /* As root a setuid file of its own is the operator's choice (uid 0 allowed); what
     * must hold is that a non-root task cannot make one owned by root. */
    verdict(name, bad && getuid() != 0, cmd);
    unlink(path);
}

/* Leaves at `path` a setuid-root copy of a shell, as a task with cap_add chown and
 * fowner can make one (its own mounts are nosuid: the test tries it from the host). */
static void plant_suid(const char *path) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "cp /bin/sh %s", path);
    int copied = system(cmd) == 0;
    int r1 = chown(path, 0, 0);
    int r2 = chmod(path, 04755);
    struct stat st = {0};
    stat(path, &st);
    printf("plant-suid = %s, chown %s, chmod %s: uid %d mode %o\n", copied ? "copied" : "not copied",
           r1 ? strerrorname_np(errno) : "worked", r2 ? "failed" : "worked", st.st_uid,
           st.st_mode & 07777);
}

/* Leaves at `path` a copy of `cat` with the file capability CAP_DAC_OVERRIDE (permitted,
 * effective), as a task with cap_add setfcap can make one. */
static void plant_fcap(const char *path) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "cp /bin/cat %s", path);
    if (system(cmd) != 0) {
        printf("plant-fcap = not copied\n");
        return;
    }
    struct vfs_cap_data d;
    memset(&d, 0, sizeof d);
    d.magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE;
    d.data[0].permitted = 1u << CAP_DAC_OVERRIDE;
    if (setxattr(path, "security.capability", &d, XATTR_CAPS_SZ_2, 0) < 0)
        printf("plant-fcap = %s\n", strerrorname_np(errno));
    else
        printf("plant-fcap = set\n");
}

/* An i386 system call from 64-bit code (`int $0x80` takes the 32-bit table, which
 * seccomp sees as AUDIT_ARCH_I386): the filter lets no other architecture's call through
 * and kills the process (SIGSYS). Tried in a child without core dumps. */
static void int80(const char *name) {
#if defined(__x86_64__)
    pid_t p = fork();
    if (p == 0) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L /* i386 getpid */) : "memory");
        _exit(r == getpid() ? 0 : 1);
    }
    int st = 0;
    char buf[128];
    if (p < 0 || waitpid(p, &st, 0) < 0) {
        verdict(name, 1, "could not try");
    } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) {
        verdict(name, 0, "SIGSYS");
    } else if (WIFSIGNALED(st)) {
        snprintf(buf, sizeof buf, "killed by %s, not SIGSYS", sigabbrev_np(WTERMSIG(st)));
        verdict(name, 1, buf);
    } else {
        snprintf(buf, sizeof buf, "exit %d: the call went through", WEXITSTATUS(st));
        verdict(name, 1, buf);
    }
#else
    verdict(name, 0, "no i386 ABI on this architecture");
#endif
}

/* The classic chroot escape: chroot into a subdirectory, climb, chroot there. Then
 * nothing of the host may be at "/": neither its usual top-level directories nor
 * `marker`, a file the test made on the host. */
static const char *marker = "";

static void chroot_escape(const char *name) {
    mkdir("/tmp/probe-jail", 0755);
    if (chroot("/tmp/probe-jail") < 0) {
        verdict(name, 0, strerrorname_np(errno));
        return;
    }
    for (int i = 0; i < 64; i++) chdir("..");
    chroot(".");
    const char *host[] = {"/boot", "/home", "/var", "/work", marker, NULL};
    for (int i = 0; host[i]; i++) {
        struct stat st;
        if (host[i][0] && !stat(host[i], &st)) {
            char buf[512];
            snprintf(buf, sizeof buf, "reached %s", host[i]);
            verdict(name, 1, buf);
            return;
        }
    }
    verdict(name, 0, "only the task's world above the jail");
}

static void connect_to(const char *name, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    if (r < 0) verdict(name, 0, strerrorname_np(errno));
    else verdict(name, 1, "connected to the host's loopback");
    close(s);
}

static void interfaces(void) {
    FILE *f = fopen("/proc/net/dev", "r");
    char line[512], out[1024] = "";
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (++n <= 2) continue;
        char *c = strchr(line, ':');
        if (!c) continue;
        *c = 0;
        char *s = line;
        while (*s == ' ') s++;
        strncat(out, s, sizeof out - strlen(out) - 2);
        strcat(out, " ");
    }
    if (f) fclose(f);
    printf("interfaces = %s\n", out);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* A probe whose supervisor is gone (kill-parent as root) lives on without its log. */
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "caps")) caps();
        else if (!strcmp(a, "setuid")) must_fail("setuid", setresuid(0, 0, 0));
        else if (!strcmp(a, "setgid")) must_fail("setgid", setresgid(0, 0, 0));
        else if (!strcmp(a, "blk-tmp")) node("blk-tmp", "/tmp", S_IFBLK, 8, 0);
        else if (!strcmp(a, "blk-local")) node("blk-local", "/local", S_IFBLK, 8, 0);
        else if (!strcmp(a, "mem-tmp")) node("mem-tmp", "/tmp", S_IFCHR, 1, 1);
        else if (!strcmp(a, "null-tmp")) node("null-tmp", "/tmp", S_IFCHR, 1, 3);
        else if (!strcmp(a, "null-shm")) node("null-shm", "/dev/shm", S_IFCHR, 1, 3);
        else if (!strcmp(a, "suid-local")) suid_file("suid-local", "/local");
        else if (!strcmp(a, "suid-alloc")) suid_file("suid-alloc", "/alloc/data");
        else if (!strcmp(a, "core-pattern"))
            must_fail("core-pattern", open("/proc/sys/kernel/core_pattern", O_WRONLY));
        else if (!strcmp(a, "sysrq")) must_fail("sysrq", open("/proc/sysrq-trigger", O_WRONLY));
        else if (!strcmp(a, "kcore")) reads_nothing("kcore", "/proc/kcore");
        else if (!strcmp(a, "keys")) reads_nothing("keys", "/proc/keys");
        else if (!strcmp(a, "timer-list")) reads_nothing("timer-list", "/proc/timer_list");
        else if (!strcmp(a, "sched-debug")) reads_nothing("sched-debug", "/proc/sched_debug");
        else if (!strcmp(a, "acpi")) empty_dir("acpi", "/proc/acpi");
        else if (!strcmp(a, "scsi")) empty_dir("scsi", "/proc/scsi");
        else if (!strcmp(a, "sys")) empty_dir("sys", "/sys");
        else if (!strcmp(a, "dev-ro")) must_fail_with("dev-ro", open("/dev/probe", O_CREAT | O_WRONLY, 0644), EROFS);
        else if (!strcmp(a, "userns")) must_fail_with("userns", unshare(CLONE_NEWUSER), EPERM);
        else if (!strcmp(a, "clone-userns"))
            must_fail_with("clone-userns", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), EPERM);
        else if (!strcmp(a, "clone3")) must_fail_with("clone3", syscall(SYS_clone3, 0, 0), ENOSYS);
        else if (!strcmp(a, "keyctl")) must_fail_with("keyctl", syscall(SYS_keyctl, 0, -3, 0, 0, 0), EPERM);
        else if (!strcmp(a, "bpf")) {
            union bpf_attr attr;
            memset(&attr, 0, sizeof attr);
            must_fail_with("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr), EPERM);
        } else if (!strcmp(a, "perf")) {
            struct perf_event_attr pe;
            memset(&pe, 0, sizeof pe);
            pe.size = sizeof pe;
            pe.type = PERF_TYPE_SOFTWARE;
            must_fail_with("perf", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0), EPERM);
        } else if (!strcmp(a, "userfaultfd")) must_fail_with("userfaultfd", syscall(SYS_userfaultfd, 0), EPERM);
        else if (!strcmp(a, "mount")) must_fail_with("mount", mount("none", "/tmp", "tmpfs", 0, NULL), EPERM);
        else if (!strcmp(a, "umount")) must_fail_with("umount", umount2("/proc/sys", MNT_DETACH), EPERM);
        else if (!strcmp(a, "remount-proc-sys"))
            must_fail("remount-proc-sys", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
        else if (!strcmp(a, "open-by-handle"))
            must_fail_with("open-by-handle", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0), EPERM);
        else if (!strcmp(a, "x32")) must_fail_with("x32", syscall(0x40000000 | SYS_getpid), EPERM);
        else if (!strcmp(a, "pvm-read")) {
            /* Reading its own memory: allowed by the kernel, refused by the filter. */
            char src[8] = "probe", dst[8];
            struct iovec l = {dst, sizeof dst}, r = {src, sizeof src};
            must_fail_with("pvm-read", syscall(SYS_process_vm_readv, getpid(), &l, 1, &r, 1, 0), EPERM);
        } else if (!strcmp(a, "personality"))
            must_fail_with("personality", syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */), EPERM);
        else if (!strcmp(a, "proc1")) {
            struct stat st;
            must_fail("proc1", stat("/proc/1/mountinfo", &st));
        }
        else if (!strcmp(a, "chroot-escape")) chroot_escape("chroot-escape");
        else if (!strcmp(a, "int80")) int80("int80");
        else if (!strncmp(a, "plant-suid=", 11)) plant_suid(a + 11);
        else if (!strncmp(a, "plant-fcap=", 11)) plant_fcap(a + 11);
        else if (!strcmp(a, "interfaces")) interfaces();
        else if (!strncmp(a, "host-marker=", 12)) marker = a + 12;
        else if (!strncmp(a, "await=", 6)) {
            /* Until the test says so (it makes the file): a step that must come after the
             * start returned. */
            struct stat st;
            printf("awaiting %s\n", a + 6);
            while (stat(a + 6, &st) < 0) usleep(2000);
        }
        else if (!strncmp(a, "kill=", 5)) must_fail("kill", kill(atoi(a + 5), SIGKILL));
        else if (!strncmp(a, "connect=", 8)) connect_to("connect", atoi(a + 8));
        else if (!strcmp(a, "kill-parent")) must_fail("kill-parent", kill(getppid(), SIGKILL));
        else if (!strcmp(a, "sleep")) {
            printf("probe-done\n");
            pause();
        }
        else printf("%s ? unknown probe\n", a);
    }
    printf("probe-done\n");
    return 0;
}
