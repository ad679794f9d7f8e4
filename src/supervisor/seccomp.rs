//! The default seccomp filter of exec tasks (`config.seccomp: "default"`, docs/task.md "Isolation"): the
//! kernel interfaces a task has no business with fail with `EPERM`; everything else is
//! allowed. Compiled by `seccompiler` once per process, installed by the command process
//! last, after `no_new_privs`, just before `execve`.
//!
//! What it refuses, and why (each is either a way to the host's kernel state or a large
//! attack surface that tasks do not need; most also need a capability a task does not
//! hold, and the filter is the second wall for root tasks and kernel bugs):
//! - keyring (`add_key`, `request_key`, `keyctl`): the kernel keyring is not namespaced;
//! - `bpf`, `perf_event_open`, `userfaultfd`: frequent sources of kernel exploits;
//! - `kexec_load`, `kexec_file_load`, `reboot`: replace or stop the host's kernel;
//! - module loading (`init_module`, `finit_module`, `delete_module`);
//! - `open_by_handle_at`: opens host files by handle, past any chroot (the "shocker"
//!   escape);
//! - new user namespaces (`unshare` and `clone` with `CLONE_NEWUSER`), and `setns`;
//! - the mount API (`mount`, `umount2`, `pivot_root`, `fsopen`, `fsconfig`, `fsmount`,
//!   `fspick`, `move_mount`, `open_tree`, `mount_setattr`): the task's mounts are fixed;
//! - `swapon`, `swapoff`, `settimeofday`, `clock_settime`, `clock_adjtime`, `acct`,
//!   `quotactl`, `quotactl_fd`, `lookup_dcookie`, `syslog`, `vhangup`, `iopl`, `ioperm`,
//!   `uselib`, `_sysctl`, `nfsservctl`: host-wide state;
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`: a large kernel surface with
//!   a history of escapes (Docker's default profile refuses it too); programs fall back
//!   to plain system calls.
//! - `process_vm_readv`, `process_vm_writev`, `kcmp`: reading and comparing other
//!   processes' memory and files (Docker refuses them without `CAP_SYS_PTRACE`);
//!   `personality` but for the values Docker allows (no `ADDR_NO_RANDOMIZE`).
//! - the x32 ABI (system call numbers with bit 30 set): another entry to every system
//!   call above under other numbers.
//!
//! Two exceptions to `EPERM`: `clone3` fails with `ENOSYS`, as Docker's profile does,
//! since its flags are in memory the filter cannot read: C libraries then use `clone`,
//! whose flags it can. And a system call of another architecture (a 32-bit i386
//! program) kills the process (`SIGSYS`), since its numbers mean other calls.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "riscv64")]
const ARCH: TargetArch = TargetArch::riscv64;

/// The system calls refused outright.
fn refused() -> Vec<libc::c_long> {
    use libc::*;
    let mut v = vec![
        SYS_add_key,
        SYS_request_key,
        SYS_keyctl,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_reboot,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_open_by_handle_at,
        SYS_setns,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_move_mount,
        SYS_open_tree,
        SYS_mount_setattr,
        SYS_swapon,
        SYS_swapoff,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_acct,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_syslog,
        SYS_vhangup,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_kcmp,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        SYS_lookup_dcookie,
        SYS_iopl,
        SYS_ioperm,
        SYS_uselib,
        SYS__sysctl,
        SYS_nfsservctl,
    ]);
    v
}

/// The filter's rules: each refused call unconditionally, `unshare` and `clone` when
/// their flags ask for a new user namespace.
fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|nr| (nr, vec![])).collect();
    let newuser = libc::CLONE_NEWUSER as u64;
    let with_newuser = || -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )?])?])
    };
    rules.insert(libc::SYS_unshare, with_newuser()?);
    rules.insert(libc::SYS_clone, with_newuser()?);
    // personality(2): only the values Docker's profile allows (the default, a query,
    // UNAME26 and READ_IMPLIES_EXEC off), not ADDR_NO_RANDOMIZE and the like.
    let not = |v: u64| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, v);
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(vec![
            not(0)?,
            not(0x8)?,
            not(0x2_0000)?,
            not(0x2_0008)?,
            not(0xffff_ffff)?,
        ])?],
    );
    Ok(rules)
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// Offset of `nr` in `struct seccomp_data`.
const DATA_NR: u32 = 0;
/// `__X32_SYSCALL_BIT`.
const X32_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// What seccompiler cannot say (it matches system call numbers exactly and has one
/// action for a match): x32 numbers refused with `EPERM`, `clone3` with `ENOSYS`. Goes
/// right after the architecture check, before seccompiler's own number load.
fn prefix() -> Vec<sock_filter> {
    let mut p = vec![stmt(BPF_LD_W_ABS, DATA_NR)];
    if cfg!(target_arch = "x86_64") {
        p.push(jump(BPF_JGE_K, X32_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, errno(libc::EPERM)));
    }
    p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(BPF_RET_K, errno(libc::ENOSYS)));
    p
}

/// Compiles the default filter.
pub fn compile() -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        rules().map_err(|e| e.to_string())?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(|e| e.to_string())?;
    let mut prog: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    // seccompiler's program opens with the architecture check: load the arch, jump over
    // the next instruction when it is ours, else kill. Ours follows it.
    let arch_check = prog.len() > 3
        && prog[0].code == BPF_LD_W_ABS
        && prog[0].k == 4
        && prog[2].code == BPF_RET_K;
    if !arch_check {
        return Err("seccompiler's program does not open with the architecture check".into());
    }
    prog.splice(3..3, prefix());
    Ok(prog)
}

/// The default filter, compiled once per process (a supervisor compiles it while it
/// waits for its task, see [`prime`]).
pub fn default_filter() -> Result<&'static BpfProgram, String> {
    static PROG: std::sync::OnceLock<Result<BpfProgram, String>> = std::sync::OnceLock::new();
    PROG.get_or_init(compile).as_ref().map_err(Clone::clone)
}

/// Compiles the filter ahead, off the start's path.
pub fn prime() {
    let _ = default_filter();
}

/// Installs `prog` on the calling thread (no_new_privs is set first, as the kernel
/// requires of a process without CAP_SYS_ADMIN). Allocation-free.
pub fn install(prog: &BpfProgram) -> std::io::Result<()> {
    seccompiler::apply_filter(prog).map_err(|e| std::io::Error::other(e.to_string()))
}

use crate::proto::TEST_ENOSYS;

/// The system calls the test hook can take away: those a supported kernel may lack.
fn hookable(name: &str) -> Option<libc::c_long> {
    Some(match name {
        "clone3" => libc::SYS_clone3,
        "open_tree" => libc::SYS_open_tree,
        "move_mount" => libc::SYS_move_mount,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "openat2" => libc::SYS_openat2,
        "pidfd_open" => libc::SYS_pidfd_open,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "pidfd_send_signal" => libc::SYS_pidfd_send_signal,
        _ => return None,
    })
}

/// A filter that makes the system calls `names` (comma-separated) fail with `ENOSYS`.
pub fn enosys_filter(names: &str) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let nr = hookable(n).ok_or_else(|| format!("{TEST_ENOSYS}: unknown system call {n:?}"))?;
        rules.insert(nr, vec![]);
    }
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| e.to_string())
}

/// Applies the test hook ([`TEST_ENOSYS`]) to this process when its environment asks for
/// it; the shim calls it first thing. Not set: nothing happens.
pub fn test_hook() {
    if let Ok(names) = std::env::var(TEST_ENOSYS) {
        match enosys_filter(&names)
            .and_then(|p| seccompiler::apply_filter_all_threads(&p).map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            Err(e) => {
                note!("execdriver-shim: {e}");
                std::process::exit(2);
            }
        }
    }
}

// The tests probe the installed filter with raw system calls in a forked child.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_with_its_prefix_after_the_arch_check() {
        let prog = compile().unwrap();
        assert_eq!(prog[3].code, BPF_LD_W_ABS);
        assert_eq!(prog[3].k, DATA_NR);
        let p = prefix();
        assert_eq!(&prog[3..3 + p.len()], &p[..]);
        // The kernel's limit is 4096 instructions.
        assert!(prog.len() < 512, "{} instructions", prog.len());
        assert!(std::ptr::eq(
            default_filter().unwrap(),
            default_filter().unwrap()
        ));
    }

    /// Installed in a forked child: refused calls fail with EPERM (x32 too), clone3 with
    /// ENOSYS, and ordinary calls still work.
    #[test]
    fn installed_it_refuses_with_eperm_and_allows_the_rest() {
        let prog = compile().unwrap();
        // SAFETY: the child only makes raw system calls and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                let code = (|| {
                    if install(&prog).is_err() {
                        return 10;
                    }
                    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    // SAFETY: raw system calls with integer arguments only.
                    unsafe {
                        if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) != -1
                            || errno() != libc::EPERM
                        {
                            return 11;
                        }
                        if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                            return 12;
                        }
                        if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                            return 13;
                        }
                        #[cfg(target_arch = "x86_64")]
                        if libc::syscall(X32_BIT as libc::c_long | libc::SYS_getpid, 0) != -1
                            || errno() != libc::EPERM
                        {
                            return 14;
                        }
                        if libc::syscall(libc::SYS_getpid) <= 0 {
                            return 15;
                        }
                        if libc::unshare(libc::CLONE_NEWUTS) == -1 && errno() == libc::EPERM {
                            // Refused by the kernel (not root), not by the filter: fine
                            // either way; this only shows the call got past the filter
                            // when we are root.
                            if libc::geteuid() == 0 {
                                return 16;
                            }
                        }
                    }
                    0
                })();
                // SAFETY: leave the forked test child at once.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                assert!(libc::WIFEXITED(st), "status {st:#x}");
                assert_eq!(libc::WEXITSTATUS(st), 0);
            }
            _ => panic!("fork failed"),
        }
    }
}
