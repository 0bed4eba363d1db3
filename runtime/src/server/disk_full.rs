//! A full disk (ENOSPC, or EDQUOT for a quota) among an error's causes. Calls that meet one
//! answer RESOURCE_EXHAUSTED with the error's message, which names it: what the kubelet and an
//! operator can act on (free space, retry), where INTERNAL or DATA_LOSS would say lockstepd or
//! the image is broken. Found by `lockstep-conformance chaos --fault disk-full`.

use tonic::Status;

/// Whether `error` or any error below it is an out-of-space I/O error.
pub fn disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        let errno = match (e.downcast_ref::<std::io::Error>(), e.downcast_ref::<nix::errno::Errno>()) {
            (Some(io), _) => io.raw_os_error(),
            (None, Some(errno)) => Some(*errno as i32),
            (None, None) => None,
        };
        if matches!(errno, Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            return true;
        }
        next = e.source();
    }
    false
}

/// RESOURCE_EXHAUSTED with `message` when `error` is a full disk, else None.
pub fn exhausted(error: &(dyn std::error::Error + 'static), message: &str) -> Option<Status> {
    disk_full(error).then(|| Status::resource_exhausted(message.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write {what}: {source}")]
    struct Outer {
        what: &'static str,
        source: Box<Inner>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("record: {source}")]
    struct Inner {
        source: std::io::Error,
    }

    #[test]
    fn a_full_disk_is_found_below_boxed_causes_and_other_errors_are_not() {
        let full =
            Outer { what: "x", source: Box::new(Inner { source: std::io::Error::from_raw_os_error(libc::ENOSPC) }) };
        assert!(disk_full(&full));
        let quota = Inner { source: std::io::Error::from_raw_os_error(libc::EDQUOT) };
        assert!(disk_full(&quota));
        assert!(disk_full(&nix::errno::Errno::ENOSPC));
        let denied =
            Outer { what: "x", source: Box::new(Inner { source: std::io::Error::from_raw_os_error(libc::EACCES) }) };
        assert!(!disk_full(&denied));
        let status = exhausted(&full, "m").map(|s| s.code());
        assert_eq!(status, Some(tonic::Code::ResourceExhausted));
        assert!(exhausted(&denied, "m").is_none());
    }
}
