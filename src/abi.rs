//! A second door onto the same operations: an `abi_stable` root module (feature `abi`).
//!
//! Each function takes the request JSON as an `RStr` and returns the response JSON as an
//! `RString`, or a [`DriverErrorFfi`] carrying the C ABI status and the error object's
//! fields. The bodies are the [`crate::host::driver`] functions, exactly as behind the C ABI;
//! panics are caught here too. A Rust host loads it with
//! [`RootModule::load_from_file`](abi_stable::library::RootModule::load_from_file), which
//! checks the layout of every type below before any call is made.

use crate::Error;
use abi_stable::{
    StableAbi, declare_root_module_statics, export_root_module,
    library::RootModule,
    package_version_strings,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::{ROption, RResult, RStr, RString},
};
use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// An error as it crosses the `abi_stable` boundary: the C ABI status and the fields of
/// `{"error": {"code", "message", "field"}}`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct DriverErrorFfi {
    pub status: i32,
    pub code: RString,
    pub message: RString,
    pub field: ROption<RString>,
}

impl From<&Error> for DriverErrorFfi {
    fn from(e: &Error) -> Self {
        DriverErrorFfi {
            status: e.status() as i32,
            code: e.code.as_str().into(),
            message: e.message.as_str().into(),
            field: e.field.as_deref().map(RString::from).into(),
        }
    }
}

/// One operation: request JSON in, response JSON or error out.
pub type OpFn = extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>;

/// The root module: the operations of the C ABI, as typed functions.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = DriverModRef)))]
#[sabi(missing_field(panic))]
pub struct DriverMod {
    /// Same number as `driver_abi_version()`.
    pub abi_version: extern "C" fn() -> u32,
    pub configure: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub fingerprint: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub start: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub wait: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub stop: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub destroy: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub inspect: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub stats: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub signal: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub recover: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    /// The last field present in version 0.1 of the module; fields added later go after it.
    #[sabi(last_prefix_field)]
    pub exec: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    /// The interactive `exec`'s wait and resize (`driver_exec_wait`, `driver_exec_resize`).
    pub exec_wait: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    pub exec_resize: extern "C" fn(RStr<'_>) -> RResult<RString, DriverErrorFfi>,
}

impl RootModule for DriverModRef {
    declare_root_module_statics! {DriverModRef}
    const BASE_NAME: &'static str = "execdriver";
    const NAME: &'static str = "execdriver";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

fn call(
    op: fn(Option<&str>) -> crate::Result<Value>,
    req: RStr<'_>,
) -> RResult<RString, DriverErrorFfi> {
    let r = catch_unwind(AssertUnwindSafe(|| op(Some(req.as_str()))));
    match r {
        Ok(Ok(v)) => RResult::ROk(v.to_string().into()),
        Ok(Err(e)) => RResult::RErr((&e).into()),
        Err(p) => RResult::RErr((&Error::from_panic(&*p)).into()),
    }
}

macro_rules! ops {
    ($($name:ident),*) => {
        $(
            extern "C" fn $name(req: RStr<'_>) -> RResult<RString, DriverErrorFfi> {
                call(crate::host::driver::$name, req)
            }
        )*
        #[export_root_module]
        fn instantiate_root_module() -> DriverModRef {
            DriverMod {
                abi_version: crate::ffi::driver_abi_version,
                $($name,)*
            }
            .leak_into_prefix()
        }
    };
}

ops!(
    configure,
    fingerprint,
    start,
    wait,
    stop,
    destroy,
    inspect,
    stats,
    signal,
    recover,
    exec,
    exec_wait,
    exec_resize
);
