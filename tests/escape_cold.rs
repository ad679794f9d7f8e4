//! The red-team suite on the cold path (`prestart_supervisor: false`: a supervisor and a command process made for each task): each attack of
//! `tests/escape/mod.rs`, as root in CI.

mod common;
mod escape;
use escape::Route;

const ROUTE: Route = Route::Cold;

fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| escape::configure(ROUTE));
}

#[test]
fn nobody_gains_nothing() {
    setup();
    escape::nobody_gains_nothing(ROUTE);
}

#[test]
fn root_stays_inside() {
    setup();
    escape::root_stays_inside(ROUTE);
}

#[test]
fn host_pid_mode_cannot_kill_the_supervisor() {
    setup();
    escape::host_pid_mode_cannot_kill_the_supervisor(ROUTE);
}

#[test]
fn network_none_reaches_nothing() {
    setup();
    escape::network_none_reaches_nothing(ROUTE);
}

#[test]
fn network_group_joins_the_namespace() {
    setup();
    escape::network_group_joins_the_namespace(ROUTE);
}

#[test]
fn exec_into_is_confined() {
    setup();
    escape::exec_into_is_confined(ROUTE);
}

#[test]
fn the_filter_is_what_refuses() {
    setup();
    escape::the_filter_is_what_refuses(ROUTE);
}

#[test]
fn proc_is_masked_in_the_mount_table() {
    setup();
    escape::proc_is_masked_in_the_mount_table(ROUTE);
}

#[test]
fn planted_files_are_out_of_reach() {
    setup();
    escape::planted_files_are_out_of_reach(ROUTE);
}

#[test]
fn a_killed_supervisor_does_not_free_the_task() {
    setup();
    escape::a_killed_supervisor_does_not_free_the_task(ROUTE);
}
