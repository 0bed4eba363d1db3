//! The container record: what lockstepd knows about one container, persisted crash-safely as
//! `<root>/containers/<id>.json`, and its conversions to the CRI's Container and
//! ContainerStatus. The parts of the status fixed at creation (image, mounts, labels, user,
//! resources…) are kept as one encoded ContainerStatus, so nothing is lost in translation.
//! Pure data; touches nothing.

use std::path::PathBuf;

use base64::Engine as _;
use lockstep_cri::model;
use prost::Message as _;
use serde::{Deserialize, Serialize};

/// Where a container is in its life, as recorded. The live state also reads the monitor's
/// exit record: a Created or Running container may have exited since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// CreateContainer is (or was, before a crash) making it; recovery rolls it back.
    Creating,
    /// The OCI runtime created it; its init waits for StartContainer.
    Created,
    Running,
    Exited,
    /// RemoveContainer began; recovery finishes it.
    Removing,
}

/// How a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// Unix nanoseconds.
    pub finished_at: i64,
    pub oom_killed: bool,
    /// Set when the exit is not the process's own story (its monitor was lost).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: RecordState,
    /// Unix nanoseconds; 0 when it has not happened.
    pub created_at: i64,
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// The OCI runtime handler that runs it.
    pub oci_handler: String,
    /// The v2 cgroup mount hidden from that runtime when it was created (its pure cgroup v1
    /// view): every later call runs it the same way, whatever a later probe finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup2_hidden: Option<std::path::PathBuf>,
    /// The signal StopContainer sends first.
    pub stop_signal: i32,
    /// The container's host pid while it runs (0 before create).
    pub init_pid: i32,
    /// `<runroot>/containers/<id>`: bundle, rootfs mount point, monitor files.
    pub run_dir: PathBuf,
    /// `<root>/containers/<id>`: the writable layer (upper and work directories).
    pub layer_dir: PathBuf,
    /// The full CRI log path, when the kubelet asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// Image holds besides the container's own (one per image volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_holds: Vec<String>,
    /// The status fields fixed at creation (and the resources, as updated): an encoded
    /// ContainerStatus, base64.
    pub status_template: String,
    /// Created from a checkpoint archive: StartContainer restores its processes (until then
    /// it has no monitor and no process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<PendingRestore>,
}

/// A checkpoint's processes, waiting for StartContainer to restore them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestore {
    /// The CRIU images, unpacked from the archive under the container's run directory.
    pub images: PathBuf,
    /// The container's stdin, as CreateContainer asked (CRI stdin, stdin_once).
    pub stdin: bool,
    pub stdin_once: bool,
}

impl ContainerRecord {
    /// A record for tests: container `id` of pod "pod", name "app", in `state`, its files
    /// under `run_dir` (not made).
    #[cfg(test)]
    pub fn for_tests(id: &str, state: RecordState, run_dir: &std::path::Path) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: "pod".into(),
            name: "app".into(),
            attempt: 0,
            state,
            created_at: 1,
            started_at: 0,
            exit: None,
            oci_handler: "fake".into(),
            cgroup2_hidden: None,
            stop_signal: 15,
            init_pid: 2,
            run_dir: run_dir.to_path_buf(),
            layer_dir: run_dir.with_extension("layer"),
            log_path: None,
            volume_holds: Vec::new(),
            status_template: String::new(),
            restore: None,
        }
    }

    /// The bundle directory (config.json).
    pub fn bundle(&self) -> PathBuf {
        self.run_dir.join("bundle")
    }

    /// Where the overlay rootfs is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.run_dir.join("rootfs")
    }

    pub fn template(&self) -> model::ContainerStatus {
        base64::engine::general_purpose::STANDARD
            .decode(&self.status_template)
            .ok()
            .and_then(|bytes| model::ContainerStatus::decode(bytes.as_slice()).ok())
            .unwrap_or_default()
    }

    pub fn set_template(&mut self, status: &model::ContainerStatus) {
        self.status_template = base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec());
    }

    pub fn cri_state(&self) -> model::ContainerState {
        match self.state {
            RecordState::Created => model::ContainerState::ContainerCreated,
            RecordState::Running => model::ContainerState::ContainerRunning,
            RecordState::Exited => model::ContainerState::ContainerExited,
            RecordState::Creating | RecordState::Removing => model::ContainerState::ContainerUnknown,
        }
    }

    /// The ListContainers entry.
    pub fn to_container(&self) -> model::Container {
        let t = self.template();
        model::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: t.metadata,
            image: t.image,
            image_ref: t.image_ref,
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: t.labels,
            annotations: t.annotations,
            image_id: t.image_id,
        }
    }

    /// The ContainerStatus: the template with the live parts.
    pub fn to_status(&self) -> model::ContainerStatus {
        let mut status = self.template();
        status.id = self.id.clone();
        status.state = self.cri_state() as i32;
        status.created_at = self.created_at;
        status.started_at = self.started_at;
        if let Some(exit) = &self.exit {
            status.finished_at = exit.finished_at;
            status.exit_code = exit.exit_code;
            status.reason = exit_reason(exit).to_string();
            status.message = exit.message.clone();
        }
        status
    }
}

/// The reason the kubelet shows for an exited container.
pub fn exit_reason(exit: &ExitInfo) -> &'static str {
    if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        let mut r = ContainerRecord {
            cgroup2_hidden: None,
            id: "c1".into(),
            sandbox_id: "p1".into(),
            name: "web".into(),
            attempt: 2,
            state: RecordState::Running,
            created_at: 10,
            started_at: 20,
            exit: None,
            oci_handler: "runc".into(),
            stop_signal: 15,
            init_pid: 42,
            run_dir: "/run/x/c1".into(),
            layer_dir: "/var/x/c1".into(),
            log_path: None,
            volume_holds: vec![],
            status_template: String::new(),
            restore: None,
        };
        r.set_template(&model::ContainerStatus {
            metadata: Some(model::ContainerMetadata { name: "web".into(), attempt: 2 }),
            labels: [("app".to_string(), "shop".to_string())].into(),
            image_id: "sha256:abc".into(),
            log_path: "/var/log/pods/x/web/2.log".into(),
            ..Default::default()
        });
        r
    }

    #[test]
    fn the_template_survives_json_and_the_live_parts_are_added() {
        let mut r = record();
        let json = serde_json::to_string(&r).unwrap();
        let back: ContainerRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let status = back.to_status();
        assert_eq!(status.state, model::ContainerState::ContainerRunning as i32);
        assert_eq!((status.created_at, status.started_at, status.finished_at), (10, 20, 0));
        assert_eq!(status.labels.get("app").map(String::as_str), Some("shop"));
        assert_eq!(status.log_path, "/var/log/pods/x/web/2.log");
        r.state = RecordState::Exited;
        r.exit = Some(ExitInfo { exit_code: 137, finished_at: 30, oom_killed: true, message: String::new() });
        let status = r.to_status();
        assert_eq!((status.exit_code, status.reason.as_str(), status.finished_at), (137, "OOMKilled", 30));
        let listed = r.to_container();
        assert_eq!((listed.id.as_str(), listed.image_id.as_str()), ("c1", "sha256:abc"));
        assert_eq!(listed.state, model::ContainerState::ContainerExited as i32);
    }

    #[test]
    fn reasons_follow_the_exit() {
        let exit = |code, oom| ExitInfo { exit_code: code, finished_at: 1, oom_killed: oom, message: String::new() };
        assert_eq!(exit_reason(&exit(0, false)), "Completed");
        assert_eq!(exit_reason(&exit(1, false)), "Error");
        assert_eq!(exit_reason(&exit(137, true)), "OOMKilled");
    }
}
