//! The Job that runs the harness on one node: a pure function from the run's settings and a node
//! name to the manifest (privileged, pinned by nodeName, the node's CRI socket from the host).
//! Touches nothing; `mod.rs` sends what it builds.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, HostPathVolumeSource, PodSpec, PodTemplateSpec, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Every fleet Job carries this label: `kubectl delete jobs -l lockstep.dev/fleet` cleans up
/// what an interrupted run left.
pub const FLEET_LABEL: &str = "lockstep.dev/fleet";
/// The run a Job belongs to (one value per `fleet` invocation).
pub const RUN_LABEL: &str = "lockstep.dev/fleet-run";
/// The node a Job runs on, as an annotation (node names may be longer than a label value).
pub const NODE_ANNOTATION: &str = "lockstep.dev/node";
/// Where the node's CRI socket appears inside the pod.
pub const SOCKET_IN_POD: &str = "/host-cri.sock";

/// What the harness runs on each node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// `run --kube 1.NN`: one minor's profile.
    Run { kube: String },
    /// `skew`: every minor's profile.
    Skew,
}

/// The run's settings that every node's Job shares.
#[derive(Debug, Clone)]
pub struct JobTemplate {
    pub run_id: String,
    pub namespace: String,
    pub image: String,
    /// The CRI socket's path on the host.
    pub socket: String,
    pub profile: Profile,
    /// activeDeadlineSeconds: the node's Job is ended by Kubernetes after this.
    pub timeout: Duration,
    /// Passed on as `--registry HOST:PORT` (fixture images already pushed there).
    pub registry: Option<String>,
}

/// The harness's command line inside the pod: JSON on stdout, the table on stderr.
pub fn command(template: &JobTemplate) -> Vec<String> {
    let mut argv = vec!["lockstep-conformance".to_string()];
    match &template.profile {
        Profile::Run { kube } => argv.extend(["run".into(), "--kube".into(), kube.clone()]),
        Profile::Skew => argv.push("skew".into()),
    }
    argv.extend(["--endpoint".into(), format!("unix://{SOCKET_IN_POD}"), "--json".into(), "-".into()]);
    if let Some(registry) = &template.registry {
        argv.extend(["--registry".into(), registry.clone()]);
    }
    argv
}

/// The Job's name for the node at `index` in the run: `lsc-<run>-<index>-<node>`, cut to the 63
/// characters a Job name may have (it becomes the `job-name` label of its pod).
pub fn job_name(run_id: &str, index: usize, node: &str) -> String {
    let node: String =
        node.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut name = format!("lsc-{run_id}-{index}-{node}");
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

pub fn labels(run_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FLEET_LABEL.to_string(), "true".to_string()),
        (RUN_LABEL.to_string(), run_id.to_string()),
        ("app.kubernetes.io/name".to_string(), "lockstep-conformance".to_string()),
    ])
}

/// The Job for one node.
pub fn manifest(template: &JobTemplate, index: usize, node: &str) -> Job {
    let labels = labels(&template.run_id);
    let annotations = BTreeMap::from([(NODE_ANNOTATION.to_string(), node.to_string())]);
    let host_path = |name: &str, path: &str, kind: &str| Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource { path: path.to_string(), type_: Some(kind.to_string()) }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        ..VolumeMount::default()
    };
    let container = Container {
        name: "conformance".to_string(),
        image: Some(template.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(command(template)),
        security_context: Some(SecurityContext { privileged: Some(true), ..SecurityContext::default() }),
        // The harness makes log directories and files under /tmp that the node's runtime
        // writes and reads: the same paths on both sides.
        volume_mounts: Some(vec![mount("cri-socket", SOCKET_IN_POD), mount("host-tmp", "/tmp")]),
        ..Container::default()
    };
    let pod = PodSpec {
        node_name: Some(node.to_string()),
        restart_policy: Some("Never".to_string()),
        // The fixture registries the harness starts listen on the node's network, where the
        // runtime pulls from; the processes it checks are the node's.
        host_network: Some(true),
        host_pid: Some(true),
        // Every selected node, control-plane and tainted ones included.
        tolerations: Some(vec![Toleration { operator: Some("Exists".to_string()), ..Toleration::default() }]),
        containers: vec![container],
        volumes: Some(vec![
            host_path("cri-socket", &template.socket, "Socket"),
            host_path("host-tmp", "/tmp", "Directory"),
        ]),
        ..PodSpec::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&template.run_id, index, node)),
            namespace: Some(template.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::try_from(template.timeout.as_secs().max(1)).unwrap_or(i64::MAX)),
            // A safety net when the run itself dies before its clean-up: gone an hour later.
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(profile: Profile) -> JobTemplate {
        JobTemplate {
            run_id: "r1x2".into(),
            namespace: "lockstep-conformance".into(),
            image: "registry.example/lockstep-conformance:0.1.0".into(),
            socket: "/run/containerd/containerd.sock".into(),
            profile,
            timeout: Duration::from_secs(1800),
            registry: None,
        }
    }

    #[test]
    fn the_manifest_pins_the_node_mounts_the_socket_and_runs_the_profile() {
        let job = manifest(&template(Profile::Run { kube: "1.36".into() }), 0, "worker-1");
        let expected = serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "lsc-r1x2-0-worker-1",
                "namespace": "lockstep-conformance",
                "labels": {
                    "app.kubernetes.io/name": "lockstep-conformance",
                    "lockstep.dev/fleet": "true",
                    "lockstep.dev/fleet-run": "r1x2"
                },
                "annotations": { "lockstep.dev/node": "worker-1" }
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": 1800,
                "ttlSecondsAfterFinished": 3600,
                "template": {
                    "metadata": {
                        "labels": {
                            "app.kubernetes.io/name": "lockstep-conformance",
                            "lockstep.dev/fleet": "true",
                            "lockstep.dev/fleet-run": "r1x2"
                        },
                        "annotations": { "lockstep.dev/node": "worker-1" }
                    },
                    "spec": {
                        "nodeName": "worker-1",
                        "restartPolicy": "Never",
                        "hostNetwork": true,
                        "hostPID": true,
                        "tolerations": [{ "operator": "Exists" }],
                        "containers": [{
                            "name": "conformance",
                            "image": "registry.example/lockstep-conformance:0.1.0",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["lockstep-conformance", "run", "--kube", "1.36",
                                        "--endpoint", "unix:///host-cri.sock", "--json", "-"],
                            "securityContext": { "privileged": true },
                            "volumeMounts": [
                                { "name": "cri-socket", "mountPath": "/host-cri.sock" },
                                { "name": "host-tmp", "mountPath": "/tmp" }
                            ]
                        }],
                        "volumes": [
                            { "name": "cri-socket",
                              "hostPath": { "path": "/run/containerd/containerd.sock", "type": "Socket" } },
                            { "name": "host-tmp", "hostPath": { "path": "/tmp", "type": "Directory" } }
                        ]
                    }
                }
            }
        });
        let actual = serde_json::to_value(&job).expect("a Job serializes");
        assert_eq!(actual, expected, "{}", serde_json::to_string_pretty(&actual).unwrap_or_default());
    }

    #[test]
    fn skew_and_a_registry_change_only_the_command() {
        let mut t = template(Profile::Skew);
        t.registry = Some("10.0.0.5:5000".into());
        assert_eq!(
            command(&t),
            [
                "lockstep-conformance",
                "skew",
                "--endpoint",
                "unix:///host-cri.sock",
                "--json",
                "-",
                "--registry",
                "10.0.0.5:5000"
            ]
        );
    }

    #[test]
    fn job_names_are_valid_and_at_most_63_characters() {
        assert_eq!(job_name("ab12", 3, "Node_A.example.com"), "lsc-ab12-3-node-a-example-com");
        let long = job_name("ab12", 10, &"n".repeat(300));
        assert_eq!(long.len(), 63);
        assert!(job_name("ab12", 1, &format!("{}.x", "a".repeat(53))).ends_with('a'));
    }
}
