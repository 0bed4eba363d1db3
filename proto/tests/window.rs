//! Round trips through each minor's window: a field that the minor lacks disappears, every
//! other field survives, and values that a minor cannot carry are refused with a clear error.
#![cfg(feature = "all-minors")]

use lockstep_cri::model;
use lockstep_cri::window::{narrow, transcode, widen};
use lockstep_cri::{v1_30, v1_33, v1_35, v1_36};

fn status_with_every_addition() -> model::ContainerStatus {
    model::ContainerStatus {
        id: "c1".into(),
        metadata: Some(model::ContainerMetadata { name: "app".into(), attempt: 2 }),
        state: model::ContainerState::ContainerRunning as i32,
        created_at: 1_700_000_000_000_000_000,
        image: Some(model::ImageSpec {
            image: "docker.io/library/busybox:latest".into(),
            user_specified_image: "busybox".into(),
            runtime_handler: "runc".into(),
            image_ref: "sha256:aaa".into(), // 1.36
            ..Default::default()
        }),
        image_ref: "sha256:bbb".into(),
        image_id: "sha256:ccc".into(), // 1.30
        labels: [("io.kubernetes.pod.name".to_string(), "web".to_string())].into(),
        user: Some(model::ContainerUser {
            // 1.31
            linux: Some(model::LinuxContainerUser { uid: 1000, gid: 1000, supplemental_groups: vec![1000, 44] }),
        }),
        stop_signal: model::Signal::Sigusr1 as i32, // 1.33
        ..Default::default()
    }
}

/// Through the window of a minor and back: what a kubelet of that minor would see.
fn seen_by<M: prost::Message + Default>(status: &model::ContainerStatus) -> model::ContainerStatus {
    let narrowed: M = transcode(status).expect("narrow");
    transcode(&narrowed).expect("widen")
}

#[test]
fn fields_a_minor_lacks_disappear_and_the_rest_survive() {
    let full = status_with_every_addition();

    let at_1_30 = seen_by::<v1_30::ContainerStatus>(&full);
    assert_eq!(at_1_30.image_id, "sha256:ccc", "1.30 has ContainerStatus.image_id");
    assert_eq!(at_1_30.user, None, "1.30 has no ContainerStatus.user");
    assert_eq!(at_1_30.stop_signal, 0, "1.30 has no stop_signal");
    assert_eq!(at_1_30.image.as_ref().unwrap().image_ref, "", "1.30 has no ImageSpec.image_ref");
    assert_eq!(at_1_30.image.as_ref().unwrap().runtime_handler, "runc");

    let at_1_33 = seen_by::<v1_33::ContainerStatus>(&full);
    assert_eq!(at_1_33.user, full.user);
    assert_eq!(at_1_33.stop_signal, model::Signal::Sigusr1 as i32);
    assert_eq!(at_1_33.image.as_ref().unwrap().image_ref, "");

    let at_1_36 = seen_by::<v1_36::ContainerStatus>(&full);
    assert_eq!(at_1_36, full, "1.36 has every field of the model's ContainerStatus");

    // Everything the oldest minor knows survives untouched.
    let expected = model::ContainerStatus {
        user: None,
        stop_signal: 0,
        image: Some(model::ImageSpec { image_ref: String::new(), ..full.image.clone().unwrap() }),
        ..full.clone()
    };
    assert_eq!(at_1_30, expected);
}

#[test]
fn runtime_features_of_later_minors_are_not_reported_to_older_kubelets() {
    let status = model::StatusResponse {
        status: Some(model::RuntimeStatus { conditions: vec![] }),
        runtime_handlers: vec![model::RuntimeHandler {
            name: "runc".into(),
            features: Some(model::RuntimeHandlerFeatures { recursive_read_only_mounts: true, user_namespaces: false }),
        }],
        features: Some(model::RuntimeFeatures { supplemental_groups_policy: true, user_namespaces_host_network: true }),
        info: Default::default(),
    };
    let at_1_30: model::StatusResponse = widen(&narrow::<_, v1_30::StatusResponse>(&status).unwrap()).unwrap();
    assert_eq!(at_1_30.runtime_handlers, status.runtime_handlers);
    assert_eq!(at_1_30.features, None, "RuntimeFeatures came in 1.31");

    let at_1_35: model::StatusResponse = widen(&narrow::<_, v1_35::StatusResponse>(&status).unwrap()).unwrap();
    let features = at_1_35.features.unwrap();
    assert!(features.supplemental_groups_policy);
    assert!(!features.user_namespaces_host_network, "user_namespaces_host_network came in 1.36");
}

#[test]
fn env_values_are_strings_before_1_34_and_bytes_after() {
    let text = model::KeyValue { key: "GREETING".into(), value: "grüß".as_bytes().to_vec() };
    let old: v1_33::KeyValue = narrow(&text).unwrap();
    assert_eq!(old.value, "grüß", "a 1.33 kubelet sends the same value as a string");
    let back: model::KeyValue = widen(&old).unwrap();
    assert_eq!(back, text);

    let binary = model::KeyValue { key: "BLOB".into(), value: vec![0xff, 0x00, 0xfe] };
    let err = narrow::<_, v1_33::KeyValue>(&binary).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("UTF-8") || err.message().contains("utf-8"), "{}", err.message());
    let new: lockstep_cri::v1_34::KeyValue = narrow(&binary).unwrap();
    assert_eq!(new.value, vec![0xff, 0x00, 0xfe]);
}

#[test]
fn signal_names_changed_in_1_37_but_the_numbers_did_not() {
    let config = model::ContainerConfig { stop_signal: model::Signal::Sigterm as i32, ..Default::default() };
    let at_1_36: v1_36::ContainerConfig = narrow(&config).unwrap();
    assert_eq!(at_1_36.stop_signal(), v1_36::Signal::Sigterm);
    assert_eq!(v1_36::Signal::Sigterm.as_str_name(), "SIGTERM");
    assert_eq!(model::Signal::Sigterm.as_str_name(), "SIGNAL_SIGTERM");
}

#[test]
fn an_unknown_enum_value_crosses_the_window_unchanged() {
    // A newer runtime may answer an enum value that this minor has no name for.
    let status = model::ContainerStatus { state: 42, ..Default::default() };
    let at_1_30: v1_30::ContainerStatus = transcode(&status).unwrap();
    assert_eq!(at_1_30.state, 42);
}
