//! lockstep-monitor: the parent of one container's process (see lockstep_runtime::monitor).
//! Started by lockstepd as `lockstep-monitor <container dir>`; reports on stdout.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [dir] if dir != "--help" && dir != "-h" => lockstep_runtime::monitor::process::main(std::path::Path::new(dir)),
        _ => {
            eprintln!("usage: lockstep-monitor <container dir>  (started by lockstepd; see monitor.json there)");
            ExitCode::from(2)
        }
    }
}
