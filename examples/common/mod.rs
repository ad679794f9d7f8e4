//! What the examples that start tasks share.

/// Points the library at this build's supervisor (`target/<profile>/`, above
/// `examples/`), unless `$EXECDRIVER_SHIM` names one: an example links the library
/// statically, so there is no `libexecdriver.so` to find it next to. Called first thing,
/// before any other thread exists.
pub fn use_build_shim() {
    if std::env::var_os("EXECDRIVER_SHIM").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let shim = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("execdriver-shim");
    // SAFETY: no other thread exists yet to read the environment meanwhile.
    unsafe { std::env::set_var("EXECDRIVER_SHIM", &shim) };
}
