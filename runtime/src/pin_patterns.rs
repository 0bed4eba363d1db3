//! The image name patterns of `image.pinned_images`, as CRI-O reads its own: an exact name
//! (`registry.k8s.io/pause:3.10`), a prefix ending in `*` (`registry.k8s.io/*`), or a keyword
//! between two `*` (`*pause*`). Images a pattern matches by one of their names are pinned: the
//! kubelet's image garbage collection leaves them alone.

/// One pattern, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinPattern {
    Exact(String),
    Prefix(String),
    Keyword(String),
}

impl PinPattern {
    /// Reads a pattern; an empty one, or one with a `*` elsewhere than at its ends, is refused.
    pub fn parse(text: &str) -> Result<PinPattern, String> {
        let refuse = |why: &str| Err(format!("pinned image pattern {text:?} {why}"));
        if text.is_empty() || text == "*" || text == "**" {
            return refuse("matches nothing or everything: name images");
        }
        let pattern = match (text.strip_prefix('*'), text.strip_suffix('*')) {
            (Some(_), Some(_)) => PinPattern::Keyword(text[1..text.len() - 1].to_string()),
            (None, Some(prefix)) => PinPattern::Prefix(prefix.to_string()),
            (Some(_), None) => return refuse("starts with `*` but does not end with one (a keyword is `*word*`)"),
            (None, None) => PinPattern::Exact(text.to_string()),
        };
        let inner = match &pattern {
            PinPattern::Exact(s) | PinPattern::Prefix(s) | PinPattern::Keyword(s) => s,
        };
        if inner.contains('*') {
            return refuse("has a `*` inside: only a trailing `*` or `*word*` is allowed");
        }
        Ok(pattern)
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            PinPattern::Exact(exact) => name == exact,
            PinPattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            PinPattern::Keyword(word) => name.contains(word.as_str()),
        }
    }
}

/// Whether any of `patterns` matches any of `names`.
pub fn pinned<'a>(patterns: &[PinPattern], mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|name| patterns.iter().any(|p| p.matches(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_keyword_patterns_match_as_cri_o_s_do() {
        let patterns: Vec<PinPattern> = ["registry.k8s.io/pause:3.10", "quay.io/infra/*", "*coredns*"]
            .iter()
            .map(|p| PinPattern::parse(p).unwrap())
            .collect();
        let is = |name: &str| pinned(&patterns, std::iter::once(name));
        assert!(is("registry.k8s.io/pause:3.10"));
        assert!(!is("registry.k8s.io/pause:3.9"), "exact means exact");
        assert!(is("quay.io/infra/agent:1"));
        assert!(!is("quay.io/other/agent:1"));
        assert!(is("registry.k8s.io/coredns/coredns:v1.11.1"));
        assert!(!pinned(&patterns, std::iter::empty()), "an image without names is not pinned");
    }

    #[test]
    fn patterns_that_match_everything_or_put_a_star_inside_are_refused_with_the_pattern() {
        for bad in ["", "*", "**", "*suffix", "a*b", "*a*b*"] {
            let err = PinPattern::parse(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
