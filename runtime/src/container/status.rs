//! ContainerStatus and ListContainers (and StreamContainers, which lists the same): records
//! refreshed with what the monitors saw; the verbose status adds where the container lives.

use std::collections::HashMap;

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::RecordState;
use super::signal;

pub fn container_status(
    containers: &ContainerManager,
    id: &str,
    verbose: bool,
) -> Result<model::ContainerStatusResponse, ContainerError> {
    let entry = containers.store.existing(id)?;
    let record = containers.refresh(&entry);
    let mut info = HashMap::new();
    if verbose {
        let live = matches!(record.state, RecordState::Running | RecordState::Created);
        let detail = serde_json::json!({
            "id": record.id,
            "sandboxID": record.sandbox_id,
            "pid": if live { record.init_pid } else { 0 },
            "runtimeHandler": record.oci_handler,
            "bundle": record.bundle(),
            "specPath": record.bundle().join("config.json"),
            "rootfs": record.rootfs(),
            "writableLayer": record.layer_dir,
            "monitorDir": record.run_dir,
            "stopSignal": signal::name(record.stop_signal),
        });
        info.insert("info".to_string(), detail.to_string());
    }
    Ok(model::ContainerStatusResponse { status: Some(record.to_status()), info })
}

pub fn list_containers(
    containers: &ContainerManager,
    filter: Option<&model::ContainerFilter>,
) -> Vec<model::Container> {
    let entries = match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
        Some(id) => containers.store.get(id).into_iter().collect(),
        None => containers.store.all(),
    };
    containers.refresh_live(&entries);
    entries.iter().filter_map(|e| e.listed()).filter(|c| crate::filter::container_matches(c, filter)).collect()
}
