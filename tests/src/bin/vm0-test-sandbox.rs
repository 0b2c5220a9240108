//! The sandbox helper of the tests' servers, which run inside a test harness that cannot
//! be one itself (see `vm0_server::Sandbox`).

fn main() {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == vm0_server::SANDBOX_HELPER_ARG) {
        vm0_server::sandbox_helper_main();
    }
    eprintln!("vm0-test-sandbox is the tests' sandbox helper; the test servers start it");
    std::process::exit(2);
}
