//! The shared library's SONAME: `libexecdriver.so.1`, the major version of its C ABI
//! (`EXECDRIVER_ABI_VERSION`), so that an installed library can be replaced by a newer
//! one of the same ABI and programs linked against it keep finding it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libexecdriver.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
