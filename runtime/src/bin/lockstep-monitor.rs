//! lockstep-monitor: the parent of one container's process (see lockstep_runtime::monitor).
//! Started by lockstepd as `lockstep-monitor <container dir>`; reports on stdout. Also ExecSync's
//! helper, as `lockstep-monitor exec RUNTIME ARGS…`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [mode, rest @ ..] if mode == "exec" => lockstep_runtime::monitor::exec_reaper::main(rest),
        [dir] if dir != "--help" && dir != "-h" => lockstep_runtime::monitor::process::main(std::path::Path::new(dir)),
        _ => {
            eprintln!("usage: lockstep-monitor <container dir>  (started by lockstepd; see monitor.json there)");
            eprintln!("       lockstep-monitor exec RUNTIME ARGS…  (ExecSync's helper; see monitor/exec_reaper.rs)");
            ExitCode::from(2)
        }
    }
}
