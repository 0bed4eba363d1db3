//! lockstep-conformance: see the crate docs; exit 0 all passed, 1 failures, 2 could not run.

fn main() -> std::process::ExitCode {
    lockstep_conformance::cli::main()
}
