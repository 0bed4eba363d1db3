//! The CRI's list filters, as pure functions: id, state, sandbox id and label selector must
//! all match (an empty or absent part matches everything).

use std::collections::HashMap;

use lockstep_cri::model;

/// Every key of the selector is present in `labels` with the same value.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn container_matches(c: &model::Container, filter: Option<&model::ContainerFilter>) -> bool {
    let Some(f) = filter else { return true };
    (f.id.is_empty() || c.id == f.id)
        && f.state.as_ref().is_none_or(|s| s.state == c.state)
        && (f.pod_sandbox_id.is_empty() || c.pod_sandbox_id == f.pod_sandbox_id)
        && labels_match(&c.labels, &f.label_selector)
}

pub fn sandbox_matches(s: &model::PodSandbox, filter: Option<&model::PodSandboxFilter>) -> bool {
    let Some(f) = filter else { return true };
    (f.id.is_empty() || s.id == f.id)
        && f.state.as_ref().is_none_or(|st| st.state == s.state)
        && labels_match(&s.labels, &f.label_selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, pod: &str, state: model::ContainerState, app: &str) -> model::Container {
        model::Container {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            state: state as i32,
            labels: [("app".to_string(), app.to_string()), ("tier".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_part_of_a_container_filter_must_match() {
        let c = container("c1", "p1", model::ContainerState::ContainerRunning, "shop");
        assert!(container_matches(&c, None));
        assert!(container_matches(&c, Some(&model::ContainerFilter::default())));
        let running = Some(model::ContainerStateValue { state: model::ContainerState::ContainerRunning as i32 });
        let exited = Some(model::ContainerStateValue { state: model::ContainerState::ContainerExited as i32 });
        let by = |id: &str, pod: &str, state, sel: &[(&str, &str)]| model::ContainerFilter {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            state,
            label_selector: sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        assert!(container_matches(&c, Some(&by("c1", "p1", running, &[("app", "shop")]))));
        assert!(!container_matches(&c, Some(&by("c2", "", None, &[]))));
        assert!(!container_matches(&c, Some(&by("", "p2", None, &[]))));
        assert!(!container_matches(&c, Some(&by("", "", exited, &[]))));
        assert!(!container_matches(&c, Some(&by("", "", None, &[("app", "shop"), ("tier", "db")]))));
        assert!(!container_matches(&c, Some(&by("", "", None, &[("missing", "")]))));
    }

    #[test]
    fn sandbox_filters_by_state_and_labels() {
        let s = model::PodSandbox {
            id: "p1".into(),
            state: model::PodSandboxState::SandboxNotready as i32,
            labels: [("io.kubernetes.pod.uid".to_string(), "u1".to_string())].into(),
            ..Default::default()
        };
        let ready = Some(model::PodSandboxStateValue { state: model::PodSandboxState::SandboxReady as i32 });
        assert!(!sandbox_matches(&s, Some(&model::PodSandboxFilter { state: ready, ..Default::default() })));
        let by_uid = model::PodSandboxFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), "u1".to_string())].into(),
            ..Default::default()
        };
        assert!(sandbox_matches(&s, Some(&by_uid)));
    }
}
