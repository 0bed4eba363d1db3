//! What the window costs: one request and one response moved between a minor and the model,
//! for a typical CreateContainer and a ListContainers answer of 100 containers.
//! Run: cargo bench -p lockstep-cri --features all-minors --bench window

use criterion::{criterion_group, criterion_main, Criterion};
use lockstep_cri::model;
use lockstep_cri::window::transcode;
use std::hint::black_box;

fn create_container() -> model::CreateContainerRequest {
    let labels = [
        ("io.kubernetes.pod.name", "web-7d4b9c"),
        ("io.kubernetes.pod.namespace", "default"),
        ("io.kubernetes.pod.uid", "5f3c1d2e-8b9a-4c7d-9e0f-1a2b3c4d5e6f"),
        ("io.kubernetes.container.name", "nginx"),
    ];
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    model::CreateContainerRequest {
        pod_sandbox_id: "a".repeat(64),
        config: Some(model::ContainerConfig {
            metadata: Some(model::ContainerMetadata { name: "nginx".into(), attempt: 0 }),
            image: Some(model::ImageSpec { image: "sha256:".to_string() + &"b".repeat(64), ..Default::default() }),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["exec httpd -f -p 8080".into()],
            envs: (0..20)
                .map(|i| model::KeyValue { key: format!("VAR_{i}"), value: format!("value-{i}").into_bytes() })
                .collect(),
            mounts: (0..4)
                .map(|i| model::Mount {
                    container_path: format!("/data/{i}"),
                    host_path: format!("/var/lib/kubelet/pods/x/volumes/{i}"),
                    ..Default::default()
                })
                .collect(),
            labels,
            log_path: "nginx/0.log".into(),
            ..Default::default()
        }),
        sandbox_config: Some(model::PodSandboxConfig::default()),
    }
}

fn list_containers() -> model::ListContainersResponse {
    let one = |i: usize| model::Container {
        id: format!("{i:064}"),
        pod_sandbox_id: "a".repeat(64),
        metadata: Some(model::ContainerMetadata { name: format!("c{i}"), attempt: 1 }),
        image: Some(model::ImageSpec { image: "docker.io/library/busybox:latest".into(), ..Default::default() }),
        image_ref: "sha256:".to_string() + &"c".repeat(64),
        state: model::ContainerState::ContainerRunning as i32,
        created_at: 1_700_000_000_000_000_000,
        labels: [("io.kubernetes.container.name".to_string(), format!("c{i}"))].into(),
        ..Default::default()
    };
    model::ListContainersResponse { containers: (0..100).map(one).collect() }
}

fn window(c: &mut Criterion) {
    let request = create_container();
    let response = list_containers();
    c.bench_function("CreateContainerRequest 1.33 -> model", |b| {
        let at_1_33: lockstep_cri::v1_33::CreateContainerRequest = transcode(&request).unwrap();
        b.iter(|| transcode::<_, model::CreateContainerRequest>(black_box(&at_1_33)).unwrap())
    });
    c.bench_function("ListContainersResponse(100) model -> 1.33", |b| {
        b.iter(|| transcode::<_, lockstep_cri::v1_33::ListContainersResponse>(black_box(&response)).unwrap())
    });
    c.bench_function("baseline: encode ListContainersResponse(100)", |b| {
        b.iter(|| prost::Message::encode_to_vec(black_box(&response)))
    });
}

criterion_group!(benches, window);
criterion_main!(benches);
