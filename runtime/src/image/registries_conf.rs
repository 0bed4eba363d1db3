//! containers-registries.conf(5), version 2, the subset a CRI pull needs: `[[registry]]` with
//! prefix, location, insecure, blocked, mirror-by-digest-only and `[[registry.mirror]]`,
//! unqualified-search-registries, short-name-mode and `[aliases]`. Reads the file and its `.d`
//! drop-ins; nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::{Parsed, Reference, Target, DOCKER_HUB};

pub const SYSTEM_FILE: &str = "/etc/containers/registries.conf";
pub const ENV_VAR: &str = "CONTAINERS_REGISTRIES_CONF";

#[derive(Debug, thiserror::Error)]
pub enum RegistriesConfError {
    #[error("cannot read registries config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("registries config {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    /// Short name (as written, no tag) to a fully qualified repository.
    aliases: Option<BTreeMap<String, String>>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    /// The version 1 format's table: refused with a clear message.
    registries: Option<toml::Value>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub mirror_by_digest_only: bool,
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    /// "all" (default), "digest-only" or "tag-only".
    #[serde(default)]
    pub pull_from_mirror: String,
}

/// How a short name that several search registries could serve is treated (containers' image
/// library decides the same way; lockstepd never has a terminal to ask on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShortNameMode {
    /// Refused unless an alias names it or only one search registry is listed.
    Enforcing,
    /// Tried on every search registry, in order (the default when the key is absent).
    #[default]
    Permissive,
    /// Tried on every search registry; aliases still apply.
    Disabled,
}

/// The merged configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistriesConf {
    /// Where short names are looked up, in order; empty means docker.io as containerd does.
    pub unqualified_search_registries: Vec<String>,
    pub short_name_mode: ShortNameMode,
    /// Short name to fully qualified repository (`registry/repository`).
    pub aliases: BTreeMap<String, String>,
    pub registries: Vec<RegistryEntry>,
}

/// One place to try for a reference: the rewritten reference and whether TLS may be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub reference: Reference,
    pub insecure: bool,
    pub mirror: bool,
}

/// Why a reference cannot be pulled under the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("registry {prefix:?} is blocked by the registries configuration")]
    Blocked { prefix: String },
    #[error("the registries configuration's [[registry]] {prefix:?} rewrites {reference} to {location:?}, which names no repository")]
    BadRewrite { prefix: String, location: String, reference: String },
    #[error("short name {name:?} is ambiguous: short-name-mode is enforcing and it could name an image on any of {registries:?}; use a fully qualified name or an [aliases] entry")]
    Ambiguous { name: String, registries: Vec<String> },
}

/// Which file to read: lockstep.toml's `[image] registries_conf`, else
/// $CONTAINERS_REGISTRIES_CONF, else /etc/containers/registries.conf.
pub fn config_path(configured: &Path) -> PathBuf {
    if !configured.as_os_str().is_empty() {
        return configured.to_path_buf();
    }
    match std::env::var_os(ENV_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(SYSTEM_FILE),
    }
}

impl RegistriesConf {
    /// Reads `path` (absent: defaults) and then each `*.conf` in `<path>.d` by name.
    pub fn load(path: &Path) -> Result<RegistriesConf, RegistriesConfError> {
        let mut conf = RegistriesConf::default();
        match std::fs::read_to_string(path) {
            Ok(text) => conf.merge(parse_file(path, &text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RegistriesConfError::Read { path: path.into(), source }),
        }
        let mut dir = path.as_os_str().to_owned();
        dir.push(".d");
        let dir = PathBuf::from(dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(conf),
            Err(source) => return Err(RegistriesConfError::Read { path: dir, source }),
        };
        let mut dropins = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| RegistriesConfError::Read { path: dir.clone(), source })?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "conf") {
                dropins.insert(entry.file_name(), p);
            }
        }
        for p in dropins.into_values() {
            let text =
                std::fs::read_to_string(&p).map_err(|source| RegistriesConfError::Read { path: p.clone(), source })?;
            conf.merge(parse_file(&p, &text)?);
        }
        Ok(conf)
    }

    /// A later file replaces the search list if it sets one, and registries with the same prefix.
    fn merge(&mut self, file: File) {
        if let Some(search) = file.unqualified_search_registries {
            self.unqualified_search_registries = search;
        }
        if let Some(mode) = file.short_name_mode {
            self.short_name_mode = match mode.as_str() {
                "enforcing" => ShortNameMode::Enforcing,
                "disabled" => ShortNameMode::Disabled,
                _ => ShortNameMode::Permissive,
            };
        }
        self.aliases.extend(file.aliases.unwrap_or_default());
        for entry in file.registry {
            match self.registries.iter_mut().find(|r| r.prefix == entry.prefix) {
                Some(existing) => *existing = entry,
                None => self.registries.push(entry),
            }
        }
    }

    /// The registries a short name is tried on, in order.
    pub fn search_registries(&self) -> Vec<String> {
        if self.unqualified_search_registries.is_empty() {
            vec![DOCKER_HUB.to_string()]
        } else {
            self.unqualified_search_registries.clone()
        }
    }

    /// The references a short name is pulled from, in order: its alias if one names it, else
    /// one per search registry, as `short-name-mode` allows.
    pub fn pull_candidates(&self, short: &Parsed) -> Result<Vec<Reference>, Unusable> {
        if let Some(alias) = self.alias(short) {
            return Ok(vec![alias]);
        }
        let registries = self.search_registries();
        if registries.len() > 1 && self.short_name_mode == ShortNameMode::Enforcing {
            return Err(Unusable::Ambiguous { name: short.path.clone(), registries });
        }
        Ok(registries.iter().map(|r| short.on_registry(r)).collect())
    }

    /// The references a short name may name among stored images, in order: its alias, then
    /// one per search registry (whatever the mode: nothing is pulled).
    pub fn local_candidates(&self, short: &Parsed) -> Vec<Reference> {
        let alias = self.alias(short);
        alias.into_iter().chain(self.search_registries().iter().map(|r| short.on_registry(r))).collect()
    }

    /// What `[aliases]` makes of a short name, with the name's tag or digest.
    fn alias(&self, short: &Parsed) -> Option<Reference> {
        let target = self.aliases.get(&short.path)?;
        let (registry, repository) = target.split_once('/')?;
        Some(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            target: short.reference.target.clone(),
        })
    }

    /// The entry whose prefix matches `name` (`registry/repository`) most specifically.
    fn entry_for(&self, reference: &Reference) -> Option<&RegistryEntry> {
        let name = reference.name();
        self.registries
            .iter()
            .filter_map(|r| prefix_match_len(&r.prefix, &reference.registry, &name).map(|n| (n, r)))
            .max_by_key(|(n, _)| *n)
            .map(|(_, r)| r)
    }

    /// Where to pull `reference` from: its mirrors in order, then its location.
    pub fn sources(&self, reference: &Reference) -> Result<Vec<Source>, Unusable> {
        let Some(entry) = self.entry_for(reference) else {
            return Ok(vec![Source { reference: reference.clone(), insecure: false, mirror: false }]);
        };
        if entry.blocked {
            return Err(Unusable::Blocked { prefix: entry.prefix.clone() });
        }
        let rewritten = |location: &str| {
            rewrite(reference, &entry.prefix, location).ok_or_else(|| Unusable::BadRewrite {
                prefix: entry.prefix.clone(),
                location: location.to_string(),
                reference: reference.to_string(),
            })
        };
        let by_digest = matches!(reference.target, Target::Digest(_));
        let mut sources = Vec::new();
        for m in &entry.mirror {
            let allowed = match m.pull_from_mirror.as_str() {
                "digest-only" => by_digest,
                "tag-only" => !by_digest,
                _ => by_digest || !entry.mirror_by_digest_only,
            };
            if allowed {
                sources.push(Source { reference: rewritten(&m.location)?, insecure: m.insecure, mirror: true });
            }
        }
        let location = if entry.location.is_empty() { &entry.prefix } else { &entry.location };
        sources.push(Source { reference: rewritten(location)?, insecure: entry.insecure, mirror: false });
        Ok(sources)
    }
}

fn parse_file(path: &Path, text: &str) -> Result<File, RegistriesConfError> {
    let invalid = |message: String| RegistriesConfError::Invalid { path: path.into(), message };
    let file: File = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
    if let Some(mode) = &file.short_name_mode {
        if !["enforcing", "permissive", "disabled"].contains(&mode.as_str()) {
            return Err(invalid(format!("short-name-mode {mode:?} is not enforcing, permissive or disabled")));
        }
    }
    for (name, target) in file.aliases.iter().flatten() {
        let bad = |why: &str| invalid(format!("[aliases] {name:?} = {target:?}: {why}"));
        let key = super::reference::parse(name).map_err(|e| bad(&e.to_string()))?;
        if key.qualified || name.contains([':', '@']) {
            return Err(bad("the name must be a short name without a tag or digest"));
        }
        let value = super::reference::parse(target).map_err(|e| bad(&e.to_string()))?;
        let last = target.rsplit('/').next().unwrap_or(target);
        if !value.qualified || last.contains(':') || target.contains('@') {
            return Err(bad("the alias must be a fully qualified repository without a tag or digest"));
        }
    }
    if file.registries.is_some() {
        return Err(invalid(
            "the version 1 format ([registries.search] …) is not supported; use [[registry]] tables".into(),
        ));
    }
    for r in &file.registry {
        if r.prefix.is_empty() && r.location.is_empty() {
            return Err(invalid("a [[registry]] has neither prefix nor location".into()));
        }
        if r.prefix.starts_with("*.") && !r.location.is_empty() {
            return Err(invalid(format!(
                "[[registry]] prefix {:?}: a wildcard prefix cannot have a location",
                r.prefix
            )));
        }
        for m in &r.mirror {
            if m.location.is_empty() {
                return Err(invalid(format!("[[registry]] {:?}: a mirror has no location", r.prefix)));
            }
            if r.mirror_by_digest_only && !m.pull_from_mirror.is_empty() {
                return Err(invalid(format!(
                    "[[registry]] {:?}: mirror-by-digest-only and a mirror's pull-from-mirror ({:?}) cannot both be set",
                    r.prefix, m.location
                )));
            }
            if !["", "all", "digest-only", "tag-only"].contains(&m.pull_from_mirror.as_str()) {
                return Err(invalid(format!(
                    "pull-from-mirror {:?} is not all, digest-only or tag-only",
                    m.pull_from_mirror
                )));
            }
        }
    }
    let mut file = file;
    for r in &mut file.registry {
        if r.prefix.is_empty() {
            r.prefix = r.location.clone();
        }
    }
    Ok(file)
}

/// How many characters of `name` the prefix matches, when it matches at a path boundary.
fn prefix_match_len(prefix: &str, registry: &str, name: &str) -> Option<usize> {
    if let Some(suffix) = prefix.strip_prefix("*.") {
        let host = registry.split(':').next().unwrap_or(registry);
        return host.ends_with(&format!(".{suffix}")).then_some(prefix.len());
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if name == prefix || name.starts_with(&format!("{prefix}/")) {
        Some(prefix.len())
    } else {
        None
    }
}

/// The reference with `prefix` replaced by `location`.
fn rewrite(reference: &Reference, prefix: &str, location: &str) -> Option<Reference> {
    let name = reference.name();
    let rest = if prefix.starts_with("*.") {
        // A wildcard matches the registry host: a mirror's location replaces it.
        if location.is_empty() || location == prefix {
            return Some(reference.clone());
        }
        name.strip_prefix(&reference.registry)?
    } else {
        name.strip_prefix(prefix.strip_suffix('/').unwrap_or(prefix))?
    };
    let new_name = format!("{}{rest}", location.strip_suffix('/').unwrap_or(location));
    let (registry, repository) = new_name.split_once('/')?;
    Some(Reference {
        registry: registry.to_string(),
        repository: repository.to_string(),
        target: reference.target.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::parse;

    fn conf(text: &str) -> RegistriesConf {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("registries.conf");
        std::fs::write(&path, text).unwrap();
        RegistriesConf::load(&path).unwrap()
    }

    fn sources(c: &RegistriesConf, image: &str) -> Vec<(String, bool)> {
        let r = parse(image).unwrap().reference;
        c.sources(&r).unwrap().into_iter().map(|s| (s.reference.to_string(), s.insecure)).collect()
    }

    #[test]
    fn mirrors_come_first_then_the_rewritten_location() {
        let c = conf(
            r#"
unqualified-search-registries = ["127.0.0.1:5000", "docker.io"]
[[registry]]
prefix = "docker.io/library"
location = "mirror.internal/hub"
insecure = true
[[registry.mirror]]
location = "cache.local:5000/hub"
[[registry.mirror]]
location = "digests.local/hub"
pull-from-mirror = "digest-only"
"#,
        );
        assert_eq!(c.search_registries(), vec!["127.0.0.1:5000", "docker.io"]);
        assert_eq!(
            sources(&c, "busybox:1"),
            vec![
                ("cache.local:5000/hub/busybox:1".to_string(), false),
                ("mirror.internal/hub/busybox:1".to_string(), true)
            ]
        );
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(sources(&c, &format!("busybox@{d}")).len(), 3);
        assert_eq!(sources(&c, "quay.io/x/y"), vec![("quay.io/x/y:latest".to_string(), false)], "no entry: as is");
        assert_eq!(sources(&c, "docker.io/libraryx/y").len(), 1, "prefixes match at path boundaries");
    }

    /// A rewrite that names no repository fails the pull: it must not fall back to the image's
    /// own registry with the entry's flags (insecure would switch TLS checks off there).
    #[test]
    fn a_rewrite_to_nothing_is_an_error_not_a_fallback() {
        let c = conf("[[registry]]\nprefix = \"reg.io/team\"\nlocation = \"mirror.io\"\ninsecure = true\n");
        let err = c.sources(&parse("reg.io/team").unwrap().reference).unwrap_err().to_string();
        assert!(err.contains("reg.io/team") && err.contains("mirror.io"), "{err}");
        assert_eq!(sources(&c, "reg.io/team/app:1"), vec![("mirror.io/app:1".to_string(), true)]);
    }

    #[test]
    fn blocked_and_wildcards() {
        let c = conf(
            "[[registry]]\nprefix = \"*.evil.io\"\nblocked = true\n[[registry]]\nlocation = \"reg.io\"\ninsecure = true\n",
        );
        let err = c.sources(&parse("a.evil.io/x").unwrap().reference).unwrap_err();
        assert!(err.to_string().contains("*.evil.io"), "{err}");
        assert_eq!(sources(&c, "reg.io/x"), vec![("reg.io/x:latest".to_string(), true)]);
        let c = conf("[[registry]]\nprefix = \"*.corp.io\"\n[[registry.mirror]]\nlocation = \"cache.local/corp\"\n");
        assert_eq!(
            sources(&c, "a.corp.io/team/app:1"),
            vec![("cache.local/corp/team/app:1".to_string(), false), ("a.corp.io/team/app:1".to_string(), false)],
            "a wildcard's mirror takes the place of the host it matched"
        );
    }

    #[test]
    fn dropins_override_by_prefix_and_search_list() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("registries.conf");
        std::fs::write(&path, "unqualified-search-registries = [\"a.io\"]\n[[registry]]\nlocation = \"r.io\"\n")
            .unwrap();
        std::fs::create_dir(tmp.path().join("registries.conf.d")).unwrap();
        std::fs::write(
            tmp.path().join("registries.conf.d/50-x.conf"),
            "[[registry]]\nlocation = \"r.io\"\nblocked = true\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("registries.conf.d/60-y.conf"), "unqualified-search-registries = [\"b.io\"]\n")
            .unwrap();
        let c = RegistriesConf::load(&path).unwrap();
        assert_eq!(c.search_registries(), vec!["b.io"]);
        assert_eq!(c.registries.len(), 1);
        assert!(c.registries[0].blocked);
    }

    #[test]
    fn absent_file_is_the_defaults_and_bad_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let c = RegistriesConf::load(&tmp.path().join("none.conf")).unwrap();
        assert_eq!(c.search_registries(), vec!["docker.io"]);
        for (text, why) in [
            ("[registries.search]\nregistries = []\n", "version 1"),
            ("[[registry]]\ninsecure = true\n", "neither prefix nor location"),
            (
                "[[registry]]\nlocation = \"x\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"some\"\n",
                "pull-from-mirror",
            ),
            ("unqualified-search-registries = \"x\"", "invalid"),
            (
                "[[registry]]\nlocation = \"x\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"tag-only\"\n",
                "mirror-by-digest-only",
            ),
        ] {
            let path = tmp.path().join("bad.conf");
            std::fs::write(&path, text).unwrap();
            let err = RegistriesConf::load(&path).unwrap_err().to_string();
            assert!(err.contains("bad.conf") && err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn the_path_comes_from_lockstep_toml_then_the_environment() {
        assert_eq!(config_path(Path::new("/x/r.conf")), Path::new("/x/r.conf"));
        if std::env::var_os(ENV_VAR).is_none() {
            assert_eq!(config_path(Path::new("")), Path::new(SYSTEM_FILE));
        }
    }

    /// short-name-mode and [aliases] as containers' image library reads them (issue 14, item
    /// 8): enforcing refuses a name two search registries could serve unless an alias names
    /// it; permissive and disabled try each; an alias always wins, with the name's tag.
    #[test]
    fn short_names_follow_the_mode_and_the_aliases() {
        let short = |name: &str| parse(name).unwrap();
        let names = |refs: Vec<Reference>| refs.into_iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let two = r#"unqualified-search-registries = ["quay.io", "docker.io"]"#;
        let enforcing =
            conf(&format!("{two}\nshort-name-mode = \"enforcing\"\n[aliases]\n\"web\" = \"registry.test/shop/web\"\n"));
        let err = enforcing.pull_candidates(&short("app:2")).unwrap_err();
        assert!(matches!(err, Unusable::Ambiguous { .. }) && err.to_string().contains("\"app\""), "{err}");
        assert_eq!(names(enforcing.pull_candidates(&short("web:2")).unwrap()), ["registry.test/shop/web:2"]);
        assert_eq!(
            names(enforcing.local_candidates(&short("app"))),
            ["quay.io/app:latest", "docker.io/library/app:latest"],
            "looking up stored images pulls nothing: every registry is a candidate"
        );
        let one = conf("unqualified-search-registries = [\"quay.io\"]\nshort-name-mode = \"enforcing\"\n");
        assert_eq!(names(one.pull_candidates(&short("app")).unwrap()), ["quay.io/app:latest"], "no ambiguity");
        for mode in ["permissive", "disabled"] {
            let c = conf(&format!("{two}\nshort-name-mode = \"{mode}\"\n"));
            assert_eq!(
                names(c.pull_candidates(&short("app")).unwrap()),
                ["quay.io/app:latest", "docker.io/library/app:latest"]
            );
        }
        assert_eq!(conf(two).short_name_mode, ShortNameMode::Permissive, "the default");

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("registries.conf");
        for bad in [
            "short-name-mode = \"strict\"",
            "[aliases]\n\"web\" = \"web\"",
            "[aliases]\n\"web\" = \"registry.test/shop/web:1\"",
            "[aliases]\n\"quay.io/web\" = \"registry.test/shop/web\"",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = RegistriesConf::load(&path).unwrap_err();
            assert!(matches!(err, RegistriesConfError::Invalid { .. }), "{bad}: {err}");
        }
    }
}
