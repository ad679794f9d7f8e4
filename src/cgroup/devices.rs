//! Kernel device control of exec tasks (docs/task.md "Isolation"): the task may use only the devices its
//! `/dev` holds, whatever node it finds or makes elsewhere. On v1 the `devices`
//! controller's allowlist; on v2 a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the
//! task's cgroup, generated here from the same list (as crun and runc do).

use super::isolation;
use crate::Result;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A character device the task may use: (major, minor), `None` for any minor.
type Allowed = (u32, Option<u32>);

/// The character devices of the task's `/dev` (`crate::supervisor::rootfs`): null, zero,
/// full, random, urandom, tty, ptmx, and the pseudo-terminals of its devpts.
pub const ALLOWED: [Allowed; 8] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// v1: the task's `devices` directory `dir` refuses everything but [`ALLOWED`] (read,
/// write, mknod). Call on a new directory, before any process joins.
pub fn v1_restrict(dir: &Path) -> Result<()> {
    let deny = dir.join("devices.deny");
    super::write_existing(&deny, "a").map_err(|e| isolation("set", &deny, e))?;
    let allow = dir.join("devices.allow");
    for (major, minor) in ALLOWED {
        let rule = match minor {
            Some(m) => format!("c {major}:{m} rwm"),
            None => format!("c {major}:* rwm"),
        };
        super::write_existing(&allow, &rule).map_err(|e| isolation("set", &allow, e))?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const BPF_LDX_W_MEM: u8 = 0x61;
const BPF_ALU64_AND_K: u8 = 0x57;
const BPF_ALU64_MOV_K: u8 = 0xb7;
const BPF_JNE_K: u8 = 0x55;
const BPF_EXIT: u8 = 0x95;
/// `BPF_DEVCG_DEV_CHAR`: the device type in the low 16 bits of `access_type`.
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The device program: allows (returns 1) exactly the character devices of [`ALLOWED`],
/// any access; everything else is refused (0).
///
/// ```text
/// r2 = ctx->access_type & 0xffff   (the type)
/// r3 = ctx->major; r4 = ctx->minor
/// for each allowed device: if r2 == char && r3 == major [&& r4 == minor] return 1
/// return 0
/// ```
pub fn program() -> Vec<Insn> {
    let mut p = vec![
        insn(BPF_LDX_W_MEM, 2, 1, 0, 0),
        insn(BPF_ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(BPF_LDX_W_MEM, 3, 1, 4, 0),
        insn(BPF_LDX_W_MEM, 4, 1, 8, 0),
    ];
    for (major, minor) in ALLOWED {
        // Each test jumps past the rest of this device's block (to the next device).
        let rest: i16 = if minor.is_some() { 4 } else { 3 };
        p.push(insn(BPF_JNE_K, 2, 0, rest, DEV_CHAR));
        p.push(insn(BPF_JNE_K, 3, 0, rest - 1, major as i32));
        if let Some(m) = minor {
            p.push(insn(BPF_JNE_K, 4, 0, rest - 2, m as i32));
        }
        p.push(insn(BPF_ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(BPF_ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    p
}

/// The loaded program, once per process (one program serves every task's cgroup).
fn loaded() -> std::result::Result<&'static OwnedFd, String> {
    static PROG: std::sync::OnceLock<std::result::Result<OwnedFd, String>> =
        std::sync::OnceLock::new();
    PROG.get_or_init(|| {
        crate::sys::bpf::load_cgroup_device_program(&program())
            .map_err(|e| format!("loading the device program: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Loads the device program ahead (~0.3 ms: the kernel verifies and compiles it), so that
/// the first task's attach does not: a prestarted supervisor on a v2 host calls it while idle.
pub fn prime() {
    let _ = loaded();
}

/// v2: attaches the device program to the task's cgroup `dir`. Call on a new directory,
/// before any process joins.
pub fn v2_attach(dir: &Path) -> Result<()> {
    let prog = loaded().map_err(|e| isolation("restrict devices of", dir, e))?;
    let d = std::fs::File::open(dir).map_err(|e| isolation("open", dir, e))?;
    crate::sys::bpf::attach_cgroup_device_program(d.as_fd(), prog.as_fd())
        .map(|_| ())
        .map_err(|e| isolation("attach the device program to", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated program, interpreted: exactly the allowed devices pass.
    fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                BPF_LDX_W_MEM => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[i.off as usize / 4] as u64;
                }
                BPF_ALU64_AND_K => r[dst] &= i.imm as u64,
                BPF_ALU64_MOV_K => r[dst] = i.imm as u64,
                BPF_JNE_K => {
                    if r[dst] != i.imm as u64 {
                        pc = (pc as isize + i.off as isize) as usize;
                    }
                }
                BPF_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn the_device_program_allows_exactly_the_list() {
        let p = program();
        let (read, write, mknod) = (2 << 16, 4 << 16, 1 << 16);
        let char_ = 2;
        let block = 1;
        for (major, minor) in ALLOWED {
            let m = minor.unwrap_or(7);
            for acc in [read, write, mknod, read | write] {
                assert_eq!(run(&p, acc | char_, major, m), 1, "c {major}:{m}");
            }
            assert_eq!(run(&p, read | block, major, m), 0, "b {major}:{m}");
        }
        for (major, minor) in [(1, 1), (1, 2), (1, 4), (8, 0), (5, 1), (10, 200), (4, 0)] {
            assert_eq!(run(&p, read | char_, major, minor), 0, "c {major}:{minor}");
        }
        assert_eq!(run(&p, read | block, 8, 0), 0, "a disk");
    }
}
