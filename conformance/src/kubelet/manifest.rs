//! Reading a Pod manifest (YAML or JSON) the way the API server would hand it to a kubelet:
//! only `kind: Pod` of `apiVersion: v1`, with a namespace, a uid and the features the
//! emulation supports; anything else is refused with a message that says what is wrong.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not YAML or JSON: {message}")]
    Syntax { path: String, message: String },
    #[error("{path} is a {kind:?} of apiVersion {api_version:?}, not a Pod of apiVersion \"v1\"")]
    NotAPod { path: String, kind: String, api_version: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The placeholder the example manifests use for the registry holding the fixture images;
/// `lockstep-conformance kubelet` replaces it with the registry's HOST:PORT.
pub const REGISTRY_PLACEHOLDER: &str = "$(LOCKSTEP_REGISTRY)";

/// Reads a manifest's text.
pub fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.display().to_string(), source })
}

/// Whether a manifest's text names the fixture registry through the placeholder.
pub fn uses_registry(text: &str) -> bool {
    text.contains(REGISTRY_PLACEHOLDER)
}

/// Loads and checks a Pod manifest; fills what the API server would (namespace, uid).
pub fn load(path: &Path) -> Result<Pod, ManifestError> {
    parse(&read(path)?, &path.display().to_string())
}

/// Parses a manifest's text with the registry placeholder replaced by `registry` (HOST:PORT).
pub fn parse_with_registry(text: &str, shown: &str, registry: &str) -> Result<Pod, ManifestError> {
    parse(&text.replace(REGISTRY_PLACEHOLDER, registry), shown)
}

pub fn parse(text: &str, shown: &str) -> Result<Pod, ManifestError> {
    let syntax = |e: serde_yaml::Error| ManifestError::Syntax { path: shown.to_string(), message: e.to_string() };
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(syntax)?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (kind, api_version) = (field("kind"), field("apiVersion"));
    if kind != "Pod" || api_version != "v1" {
        return Err(ManifestError::NotAPod { path: shown.to_string(), kind, api_version });
    }
    let mut pod: Pod = serde_yaml::from_value(value).map_err(syntax)?;
    let invalid = |message: String| ManifestError::Invalid { path: shown.to_string(), message };
    let name = pod.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("metadata.name is empty".into()));
    }
    pod.metadata.namespace.get_or_insert_with(|| "default".to_string());
    if pod.metadata.uid.as_deref().unwrap_or("").is_empty() {
        pod.metadata.uid = Some(new_uid());
    }
    let spec = pod.spec.as_ref().ok_or_else(|| invalid("spec is missing".into()))?;
    if spec.containers.is_empty() {
        return Err(invalid("spec.containers is empty".into()));
    }
    let all = spec.init_containers.iter().flatten().chain(&spec.containers);
    for container in all {
        if container.image.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(format!("container {:?} has no image", container.name)));
        }
        for env in container.env.iter().flatten() {
            if env.value_from.is_some() {
                return Err(invalid(format!(
                    "container {:?}: env {:?} uses valueFrom, which needs an API server; give a value",
                    container.name, env.name
                )));
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if volume.host_path.is_none() && volume.empty_dir.is_none() {
            return Err(invalid(format!("volume {:?}: only hostPath and emptyDir volumes are emulated", volume.name)));
        }
    }
    Ok(pod)
}

/// A random RFC 4122 version 4 UUID, as the API server gives pods.
fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_a_namespace_and_a_uid() {
        let pod = parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n",
            "p",
        )
        .unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }

    #[test]
    fn what_is_not_a_pod_is_refused_by_name() {
        let err =
            parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", "d.yaml").unwrap_err().to_string();
        assert!(err.contains("Deployment") && err.contains("d.yaml"), "{err}");
        let err = parse("- just\n- a list\n", "l.yaml").unwrap_err().to_string();
        assert!(err.contains("not a Pod"), "{err}");
        let err = parse(": : :\n\t", "bad.yaml").unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
    }

    #[test]
    fn the_registry_placeholder_is_replaced() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: $(LOCKSTEP_REGISTRY)/lockstep/shell:1}]\n";
        assert!(uses_registry(text));
        let pod = parse_with_registry(text, "p", "127.0.0.1:5000").unwrap();
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("127.0.0.1:5000/lockstep/shell:1"));
    }

    #[test]
    fn every_example_manifest_is_a_pod_that_names_the_fixture_registry() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = read(&path).unwrap();
            assert!(uses_registry(&text), "{} names no $(LOCKSTEP_REGISTRY) image", path.display());
            let pod = parse_with_registry(&text, &path.display().to_string(), "127.0.0.1:5000").unwrap();
            let spec = pod.spec.unwrap();
            for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
                assert!(c.image.as_deref().unwrap().starts_with("127.0.0.1:5000/lockstep/"), "{}", path.display());
            }
            seen += 1;
        }
        assert!(seen >= 4, "only {seen} examples in {}", dir.display());
    }

    #[test]
    fn unsupported_parts_are_named() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n  volumes: [{name: cfg, configMap: {name: x}}]\n";
        let err = parse(pod, "p").unwrap_err().to_string();
        assert!(err.contains("cfg") && err.contains("hostPath"), "{err}");
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n";
        assert!(parse(pod, "p").unwrap_err().to_string().contains("has no image"));
    }
}
