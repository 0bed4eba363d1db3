//! Stop signals: the CRI's Signal enum (1.33+) and an image's STOPSIGNAL (`SIGTERM`, `TERM`,
//! `15`, `SIGRTMIN+3`) to Linux signal numbers and back. The real-time signals count from 34,
//! as glibc and the container tools number them. Pure.

use lockstep_cri::model::Signal;

/// SIGTERM: what StopContainer sends when neither the request nor the image names a signal.
pub const DEFAULT_STOP_SIGNAL: i32 = 15;
/// What ends a container that ignores its stop signal.
pub const SIGKILL: i32 = 9;
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// The standard signals by number (1–31).
const STANDARD: [(&str, i32); 36] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
    ("RTMIN", SIGRTMIN),
    ("RTMAX", SIGRTMAX),
];

/// The number of a CRI Signal; None for RUNTIME_DEFAULT (or a value this build does not know).
pub fn from_cri(value: i32) -> Option<i32> {
    let signal = Signal::try_from(value).ok()?;
    if signal == Signal::RuntimeDefault {
        return None;
    }
    parse(signal.as_str_name().trim_start_matches("SIGNAL_"))
}

/// The CRI Signal for a number (for ContainerStatus.stop_signal).
pub fn to_cri(number: i32) -> Signal {
    let name = match name(number) {
        Some(name) => name,
        None => return Signal::RuntimeDefault,
    };
    let cri = format!("SIGNAL_SIG{}", name.replace('+', "PLUS").replace('-', "MINUS"));
    Signal::from_str_name(&cri).unwrap_or(Signal::RuntimeDefault)
}

/// The name of a signal number without "SIG": `TERM`, `RTMIN+3`, `RTMAX-1`.
pub fn name(number: i32) -> Option<String> {
    if let Some((name, _)) = STANDARD.iter().find(|(_, n)| *n == number) {
        return Some(name.to_string());
    }
    match number {
        n if n > SIGRTMIN && n <= SIGRTMIN + 15 => Some(format!("RTMIN+{}", n - SIGRTMIN)),
        n if (SIGRTMIN + 16..SIGRTMAX).contains(&n) => Some(format!("RTMAX-{}", SIGRTMAX - n)),
        _ => None,
    }
}

/// A signal as images and people write it: `SIGTERM`, `term`, `15`, `SIGRTMIN+3`, `RTMAX-2`.
pub fn parse(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = STANDARD.iter().find(|(name, _)| *name == bare) {
        return Some(*n);
    }
    let offset = |rest: &str| rest.parse::<i32>().ok();
    if let Some(rest) = bare.strip_prefix("RTMIN+").or_else(|| bare.strip_prefix("RTMINPLUS")) {
        return offset(rest).map(|k| SIGRTMIN + k).filter(|n| *n <= SIGRTMAX);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX-").or_else(|| bare.strip_prefix("RTMAXMINUS")) {
        return offset(rest).map(|k| SIGRTMAX - k).filter(|n| *n >= SIGRTMIN);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_stop_signals_parse_the_way_they_are_written() {
        assert_eq!(parse("SIGTERM"), Some(15));
        assert_eq!(parse("quit"), Some(3));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("SIGRTMIN+3"), Some(37));
        assert_eq!(parse("RTMAX-1"), Some(63));
        assert_eq!(parse("SIGBANANA"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("65"), None);
    }

    #[test]
    fn every_cri_signal_maps_to_a_number_and_back() {
        assert_eq!(from_cri(Signal::RuntimeDefault as i32), None);
        assert_eq!(from_cri(Signal::Sigusr1 as i32), Some(10));
        assert_eq!(from_cri(Signal::Sigrtminplus15 as i32), Some(49));
        assert_eq!(from_cri(Signal::Sigrtmaxminus14 as i32), Some(50));
        assert_eq!(from_cri(Signal::Sigrtmax as i32), Some(64));
        for value in 1..=65 {
            let number = from_cri(value).unwrap_or_else(|| panic!("CRI signal {value}"));
            let back = to_cri(number);
            // Aliases (SIGIOT, SIGCLD, SIGPOLL) come back as their main name.
            assert_eq!(from_cri(back as i32), Some(number), "CRI signal {value}");
        }
    }
}
