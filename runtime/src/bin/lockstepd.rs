//! lockstepd: the CRI runtime, built for exactly one Kubernetes minor (cargo feature v1_NN).

const ENABLED: usize = cfg!(feature = "v1_30") as usize
    + cfg!(feature = "v1_31") as usize
    + cfg!(feature = "v1_32") as usize
    + cfg!(feature = "v1_33") as usize
    + cfg!(feature = "v1_34") as usize
    + cfg!(feature = "v1_35") as usize
    + cfg!(feature = "v1_36") as usize
    + cfg!(feature = "v1_37") as usize;
const _: () = assert!(
    ENABLED == 1,
    "lockstepd serves exactly one Kubernetes minor: build with `--no-default-features --features v1_NN` (30 to 37)"
);

const PINNED: lockstep_cri::Minor = if cfg!(feature = "v1_30") {
    lockstep_cri::Minor::V1_30
} else if cfg!(feature = "v1_31") {
    lockstep_cri::Minor::V1_31
} else if cfg!(feature = "v1_32") {
    lockstep_cri::Minor::V1_32
} else if cfg!(feature = "v1_33") {
    lockstep_cri::Minor::V1_33
} else if cfg!(feature = "v1_34") {
    lockstep_cri::Minor::V1_34
} else if cfg!(feature = "v1_35") {
    lockstep_cri::Minor::V1_35
} else if cfg!(feature = "v1_36") {
    lockstep_cri::Minor::V1_36
} else {
    lockstep_cri::Minor::V1_37
};

fn main() -> std::process::ExitCode {
    match lockstep_runtime::cli::main(PINNED) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstepd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
