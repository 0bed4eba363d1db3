//! CRI LinuxContainerResources to OCI linux.resources (CreateContainer and
//! UpdateContainerResources), and the OOM score adjustment, clamped to lockstepd's own score
//! when the daemon cannot lower scores (no CAP_SYS_RESOURCE, as on these VMs). Pure.

use std::collections::HashMap;

use lockstep_cri::model;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::SpecError;

/// What the host allows for oom_score_adj.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomPolicy {
    /// lockstepd's own /proc/self/oom_score_adj.
    pub own_score: i32,
    /// Whether it may lower a score below its own (CAP_SYS_RESOURCE).
    pub can_lower: bool,
}

/// The cgroup limits of `r`; zero or negative numbers and empty strings mean "unset".
pub fn linux_resources(r: &model::LinuxContainerResources, field: &str) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
        cpu_set = true;
    }
    if r.cpu_quota > 0 {
        cpu.set_quota(Some(r.cpu_quota));
        cpu_set = true;
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
        cpu_set = true;
    }
    if !r.cpuset_cpus.is_empty() {
        check_cpu_list(&r.cpuset_cpus, &format!("{field}.cpuset_cpus"))?;
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        cpu_set = true;
    }
    if !r.cpuset_mems.is_empty() {
        check_cpu_list(&r.cpuset_mems, &format!("{field}.cpuset_mems"))?;
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        cpu_set = true;
    }
    if cpu_set {
        out.set_cpu(Some(cpu));
    }
    if r.memory_limit_in_bytes > 0 || r.memory_swap_limit_in_bytes > 0 {
        if r.memory_swap_limit_in_bytes > 0 && r.memory_limit_in_bytes > r.memory_swap_limit_in_bytes {
            return Err(SpecError::invalid(
                format!("{field}.memory_swap_limit_in_bytes"),
                format!(
                    "{} is below memory_limit_in_bytes {} (it counts memory plus swap)",
                    r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
                ),
            ));
        }
        let mut memory = LinuxMemory::default();
        if r.memory_limit_in_bytes > 0 {
            memory.set_limit(Some(r.memory_limit_in_bytes));
        }
        if r.memory_swap_limit_in_bytes > 0 {
            memory.set_swap(Some(r.memory_swap_limit_in_bytes));
        }
        out.set_memory(Some(memory));
    }
    if !r.hugepage_limits.is_empty() {
        let mut limits = Vec::new();
        for (i, h) in r.hugepage_limits.iter().enumerate() {
            if h.page_size.is_empty() {
                return Err(SpecError::invalid(format!("{field}.hugepage_limits[{i}].page_size"), "is empty"));
            }
            let mut limit = LinuxHugepageLimit::default();
            limit.set_page_size(h.page_size.clone());
            limit.set_limit(i64::try_from(h.limit).unwrap_or(i64::MAX));
            limits.push(limit);
        }
        out.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        for key in r.unified.keys() {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(SpecError::invalid(
                    format!("{field}.unified"),
                    format!("{key:?} is not a cgroup v2 file name"),
                ));
            }
        }
        out.set_unified(Some(r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()));
    }
    Ok(out)
}

/// Drops the hugepage limits of `resources` when the host's runtimes have no hugetlb
/// controller to set them in (`HostFacts::hugetlb`): the kubelet sends a limit, zero unless
/// requested, for every page size the kernel has, so refusing them would fail every container
/// on such a host. containerd does the same (tolerate_missing_hugetlb_controller, on by
/// default). Returns the warning to log when something was dropped.
pub fn tolerate_missing_hugetlb(resources: &mut LinuxResources, hugetlb: bool) -> Option<String> {
    if hugetlb || resources.hugepage_limits().as_ref().is_none_or(|l| l.is_empty()) {
        return None;
    }
    let sizes: Vec<String> =
        resources.hugepage_limits().iter().flatten().map(|l| format!("{}={}", l.page_size(), l.limit())).collect();
    resources.set_hugepage_limits(None);
    Some(format!(
        "hugepage limits {} not applied: the OCI runtimes have no hugetlb controller on this host",
        sizes.join(", ")
    ))
}

/// The oom_score_adj to give the container and, when it had to be raised, why.
pub fn oom_score_adj(requested: i64, policy: OomPolicy, field: &str) -> Result<(i32, Option<String>), SpecError> {
    if !(-1000..=1000).contains(&requested) {
        return Err(SpecError::invalid(field, format!("{requested} is outside -1000..1000")));
    }
    let requested = requested as i32;
    if requested < policy.own_score && !policy.can_lower {
        return Ok((
            policy.own_score,
            Some(format!(
                "oom_score_adj {requested} raised to {}: lockstepd's own score, which it cannot go below without CAP_SYS_RESOURCE",
                policy.own_score
            )),
        ));
    }
    Ok((requested, None))
}

/// A cpuset list: `0-3,6,8-9`.
fn check_cpu_list(list: &str, field: &str) -> Result<(), SpecError> {
    let bad = || SpecError::invalid(field, format!("{list:?} is not a CPU list such as \"0-3,6\""));
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi) = (lo.trim().parse::<u32>().map_err(|_| bad())?, hi.trim().parse::<u32>().map_err(|_| bad())?);
        if lo > hi {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_carry_over_and_zeros_stay_unset() {
        let r = model::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0-1".into(),
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            hugepage_limits: vec![model::HugepageLimit { page_size: "2MB".into(), limit: 0 }],
            ..Default::default()
        };
        let out = linux_resources(&r, "r").unwrap();
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["cpu"]["shares"], 512);
        assert_eq!(json["cpu"]["cpus"], "0-1");
        assert!(json["cpu"].get("mems").is_none());
        assert_eq!(json["memory"]["swap"], 64 << 20);
        assert_eq!(json["hugepageLimits"][0]["pageSize"], "2MB");
        let empty = serde_json::to_value(linux_resources(&Default::default(), "r").unwrap()).unwrap();
        assert_eq!(empty, serde_json::json!({}));
    }

    #[test]
    fn bad_values_name_their_field() {
        let r = model::LinuxContainerResources { cpuset_cpus: "3-1".into(), ..Default::default() };
        assert_eq!(linux_resources(&r, "r").unwrap_err().field, "r.cpuset_cpus");
        let r = model::LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 50,
            ..Default::default()
        };
        assert_eq!(linux_resources(&r, "r").unwrap_err().field, "r.memory_swap_limit_in_bytes");
    }

    #[test]
    fn oom_scores_below_the_daemons_are_raised_when_it_cannot_lower_them() {
        let here = OomPolicy { own_score: 0, can_lower: false };
        let (score, note) = oom_score_adj(-998, here, "f").unwrap();
        assert_eq!(score, 0);
        assert!(note.unwrap().contains("CAP_SYS_RESOURCE"));
        assert_eq!(oom_score_adj(500, here, "f").unwrap(), (500, None));
        assert_eq!(oom_score_adj(-998, OomPolicy { own_score: 0, can_lower: true }, "f").unwrap(), (-998, None));
        assert!(oom_score_adj(1001, here, "f").is_err());
    }
}
