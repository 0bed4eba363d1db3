//! mounts: what a container's volumes look like from inside — a read-only bind whose submount
//! stays writable, recursive read-only mounts (1.30, where the runtime reports the feature) and
//! the requests they must refuse, mount propagation Private / HostToContainer / Bidirectional,
//! and a host path that is a symlink. Touches only the temporary directories it makes and the
//! mounts it makes in them on the node (a tmpfs, bind mounts), which it unmounts again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_cri::{model, Minor};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::conkit::{security, with_kit, with_kit_config, Kit};
use super::containers::IMAGES;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Feature, Need, Test, TestFuture, TestResult};

const AREA: &str = "mounts";
/// As `pods::STRICTNESS`: the error code and words, beyond what the kubelet needs.
const STRICTNESS: &str = "strictness";
const RRO: &[Need] = &[Need::Registry, Need::Feature(Feature::RecursiveReadOnlyMounts)];

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    use model::MountPropagation::{PropagationBidirectional, PropagationHostToContainer, PropagationPrivate};
    vec![
        test("A read-only mount cannot be written, but a submount under it can (not recursive)", IMAGES, |c| {
            Box::pin(readonly_not_recursive(c))
        }),
        test("A recursive read-only mount makes its submounts read-only too", RRO, |c| Box::pin(recursive(c))),
        test("A recursive read-only mount that is writable or propagates is refused and nothing runs", RRO, |c| {
            Box::pin(rro_refused(c, false))
        }),
        Test {
            area: STRICTNESS,
            name: "A recursive read-only mount that is writable or propagates is InvalidArgument naming the mount",
            since: Minor::V1_30,
            needs: RRO,
            timeout: Duration::from_secs(120),
            body: |c| Box::pin(rro_refused(c, true)),
        },
        test("Mount propagation Private: later mounts cross neither way", IMAGES, |c| {
            Box::pin(propagation(c, PropagationPrivate))
        }),
        test("Mount propagation HostToContainer: the node's later mounts show inside, not the reverse", IMAGES, |c| {
            Box::pin(propagation(c, PropagationHostToContainer))
        }),
        test("Mount propagation Bidirectional: later mounts cross both ways", IMAGES, |c| {
            Box::pin(propagation(c, PropagationBidirectional))
        }),
        test("A mount whose host path is a symlink shows the directory it points to", IMAGES, |c| {
            Box::pin(symlink_source(c))
        }),
        Test {
            since: Minor::V1_31,
            ..test("An image volume (Mount.image) shows the image's files, read-only", IMAGES, |c| {
                Box::pin(image_volume(c, false))
            })
        },
        Test {
            since: Minor::V1_33,
            ..test("An image volume with image_sub_path shows that directory of the image", IMAGES, |c| {
                Box::pin(image_volume(c, true))
            })
        },
    ]
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, Failure> {
    tempfile::Builder::new().prefix(prefix).tempdir().map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))
}

fn mkdir(path: &Path) -> TestResult {
    std::fs::create_dir_all(path).map_err(|e| Failure::fail(format!("cannot make {}: {e}", path.display())))
}

/// A mount the test made on the node, lazily unmounted (with whatever is under it) when dropped.
struct NodeMount(PathBuf);

impl NodeMount {
    fn tmpfs(at: &Path) -> Result<NodeMount, Failure> {
        mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::empty(), Some("size=1m"))
            .map_err(|e| Failure::fail(format!("cannot mount a tmpfs on {}: {e}", at.display())))?;
        Ok(NodeMount(at.to_path_buf()))
    }

    fn bind(from: &Path, at: &Path) -> Result<NodeMount, Failure> {
        mount(Some(from), at, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| Failure::fail(format!("cannot bind {} on {}: {e}", from.display(), at.display())))?;
        Ok(NodeMount(at.to_path_buf()))
    }

    /// Makes the mount (and those under it) shared or private.
    fn propagate(&self, flag: MsFlags) -> TestResult {
        mount(None::<&str>, &self.0, None::<&str>, flag | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| Failure::fail(format!("cannot change the propagation of {}: {e}", self.0.display())))
    }
}

impl Drop for NodeMount {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// The node's mount points at or under `dir`.
fn node_mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| *p == dir || p.starts_with(&format!("{dir}/")))
        .map(String::from)
        .collect()
}

/// critest's layout for read-only mounts: a directory with a tmpfs mounted at `tmpfs/` in it.
/// The fields drop in order: the tmpfs is unmounted before the directory goes.
struct WithSubmount {
    tmpfs: NodeMount,
    dir: tempfile::TempDir,
}

impl WithSubmount {
    fn new() -> Result<WithSubmount, Failure> {
        let dir = temp_dir("lockstep-conformance-rro-")?;
        let at = dir.path().join("tmpfs");
        mkdir(&at)?;
        Ok(WithSubmount { tmpfs: NodeMount::tmpfs(&at)?, dir })
    }

    fn mount(&self, readonly: bool, recursive: bool) -> model::Mount {
        model::Mount {
            container_path: "/mnt".into(),
            host_path: self.dir.path().display().to_string(),
            readonly,
            recursive_read_only: recursive,
            ..Default::default()
        }
    }
}

/// `touch <path>` in the container: Ok(()) or the error it printed.
async fn touch(kit: &Kit, id: &str, path: &str) -> Result<Result<(), String>, Failure> {
    let r = kit.exec(id, &["touch", path], 30).await.map_err(|e| call_failed("ExecSync", &e))?;
    Ok(if r.exit_code == 0 { Ok(()) } else { Err(String::from_utf8_lossy(&r.stderr).trim().to_string()) })
}

async fn readonly_not_recursive(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "ro-mount", |kit| async move {
        let tree = WithSubmount::new()?;
        let mut config = kit.shell_config("ro-mount", "exec sleep 3600").await?;
        config.mounts.push(tree.mount(true, false));
        let id = kit.run(config).await?;
        check!(touch(&kit, &id, "/mnt/top").await?.is_err(), "a file was written to the top of a read-only mount");
        if let Err(e) = touch(&kit, &id, "/mnt/tmpfs/file").await? {
            return Err(Failure::fail(format!(
                "the tmpfs under a read-only (not recursive) mount cannot be written: {e}; it must stay writable \
                 (the bind is recursive, only its top is read-only)"
            )));
        }
        check!(
            tree.tmpfs.0.join("file").exists(),
            "the file written under /mnt/tmpfs is not in the node's tmpfs: the submount was not carried in"
        );
        Ok(())
    })
    .await
}

async fn recursive(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "rro-mount", |kit| async move {
        let tree = WithSubmount::new()?;
        let mut config = kit.shell_config("rro-mount", "exec sleep 3600").await?;
        config.mounts.push(tree.mount(true, true));
        let id = kit.run(config).await?;
        check!(touch(&kit, &id, "/mnt/top").await?.is_err(), "a file was written to the top of a read-only mount");
        match touch(&kit, &id, "/mnt/tmpfs/file").await? {
            Ok(()) => return Err(Failure::fail("the tmpfs under a recursive read-only mount was written")),
            Err(e) => {
                check!(e.contains("Read-only file system"), "touch under the submount failed with {e:?}, not EROFS")
            }
        }
        check!(!tree.tmpfs.0.join("file").exists(), "a file appeared in the node's tmpfs");
        let s = kit.status(&id).await?;
        check!(s.mounts.iter().any(|m| m.container_path == "/mnt" && m.readonly), "status.mounts {:?}", s.mounts);
        Ok(())
    })
    .await
}

/// The three requests the CRI forbids with recursive_read_only: not readonly, and propagation
/// other than Private. Each must be refused by CreateContainer and leave no container and no
/// mount behind; `strict`: with InvalidArgument naming the mount (its index or its path).
async fn rro_refused(ctx: Ctx, strict: bool) -> TestResult {
    use model::MountPropagation::{PropagationBidirectional, PropagationHostToContainer, PropagationPrivate};
    let purpose = if strict { "rro-strict" } else { "rro-refused" };
    with_kit(&ctx, purpose, |kit| async move {
        let tree = WithSubmount::new()?;
        let cases = [
            ("readonly false", false, PropagationPrivate),
            ("propagation HostToContainer", true, PropagationHostToContainer),
            ("propagation Bidirectional", true, PropagationBidirectional),
        ];
        let mut problems = Vec::new();
        let mut accepted = Vec::new();
        for (i, (what, readonly, propagation)) in cases.into_iter().enumerate() {
            let mut config = kit.shell_config(&format!("{purpose}-{i}"), "exec sleep 3600").await?;
            let mut mount = tree.mount(readonly, true);
            mount.propagation = propagation as i32;
            config.mounts.push(mount);
            match kit.try_create(config).await {
                Ok(id) => {
                    kit.adopt(&id);
                    accepted.push(id);
                    problems.push(format!("recursive_read_only with {what} was accepted by CreateContainer"));
                }
                Err(e) if strict => {
                    let names_it = e.message().contains("mounts[0]") || e.message().contains("/mnt");
                    if e.code() != tonic::Code::InvalidArgument || !names_it {
                        problems.push(format!(
                            "recursive_read_only with {what}: {:?} {:?} (want InvalidArgument naming mounts[0] or /mnt)",
                            e.code(),
                            e.message()
                        ));
                    }
                }
                Err(_) => {}
            }
        }
        let filter = model::ContainerFilter { pod_sandbox_id: kit.pod.id.clone(), ..Default::default() };
        let left: Vec<String> =
            kit.list(filter).await?.into_iter().map(|c| c.id).filter(|id| !accepted.contains(id)).collect();
        check!(left.is_empty(), "refused requests left containers listed: {left:?}");
        let mounts = node_mounts_under(tree.dir.path());
        check!(
            mounts.len() == 1,
            "refused requests left mounts of the volume on the node (only the test's tmpfs belongs there): {mounts:?}"
        );
        check!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    })
    .await
}

/// critest's propagation check: a volume shared (or private) on the node, mounted in a privileged
/// container at the same path; the node mounts under it after the start, then the container does.
async fn propagation(ctx: Ctx, propagation: model::MountPropagation) -> TestResult {
    use model::MountPropagation::{PropagationBidirectional, PropagationPrivate};
    let adjust = |c: &mut model::PodSandboxConfig| {
        c.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default).privileged =
            true;
    };
    with_kit_config(&ctx, "propagation", adjust, |kit| async move {
        let base = temp_dir("lockstep-conformance-propagation-")?;
        let source = base.path().join("mnt");
        let node_point = source.join("from-node");
        let flags = base.path().join("flags");
        mkdir(&node_point)?;
        mkdir(&flags)?;
        std::fs::write(flags.join("flag"), "")
            .map_err(|e| Failure::fail(format!("cannot write {}: {e}", flags.display())))?;
        let volume = NodeMount::bind(&source, &source)?;
        volume.propagate(if propagation == PropagationPrivate { MsFlags::MS_PRIVATE } else { MsFlags::MS_SHARED })?;
        let shown = source.display().to_string();
        let mut config = kit.shell_config("propagation", "exec sleep 3600").await?;
        let sc = security(&mut config);
        sc.privileged = true;
        sc.masked_paths.clear();
        sc.readonly_paths.clear();
        config.mounts.push(model::Mount {
            container_path: shown.clone(),
            host_path: shown.clone(),
            propagation: propagation as i32,
            ..Default::default()
        });
        let id = kit.run(config).await?;
        let s = kit.status(&id).await?;
        let reported = s.mounts.iter().find(|m| m.container_path == shown).map(|m| m.propagation());
        check!(reported == Some(propagation), "ContainerStatus reports the volume's propagation as {reported:?}");

        let node_side = NodeMount::bind(&flags, &node_point)?;
        let seen = kit.sh(&id, &format!("ls -A {}", node_point.display())).await?;
        let want_seen = propagation != PropagationPrivate;
        check!(
            seen.contains("flag") == want_seen,
            "with {propagation:?} the node's mount made after the start {} in the container (ls: {seen:?})",
            if want_seen { "is missing" } else { "shows" }
        );

        let container_point = source.join("from-container");
        kit.sh(&id, &format!("mkdir -p {0} && mount --bind /etc {0}", container_point.display())).await?;
        let on_node = std::fs::read_dir(&container_point).map(|d| d.count()).unwrap_or(0);
        let want_back = propagation == PropagationBidirectional;
        check!(
            (on_node > 0) == want_back,
            "with {propagation:?} the container's mount {} on the node ({on_node} entries under {})",
            if want_back { "is missing" } else { "shows" },
            container_point.display()
        );
        drop(node_side);
        drop(volume);
        Ok(())
    })
    .await
}

async fn symlink_source(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "symlink-volume", |kit| async move {
        let dir = temp_dir("lockstep-conformance-target-")?;
        std::fs::write(dir.path().join("flag"), "")
            .map_err(|e| Failure::fail(format!("cannot write in {}: {e}", dir.path().display())))?;
        let link = PathBuf::from(format!("{}-symlink", dir.path().display()));
        std::os::unix::fs::symlink(dir.path(), &link)
            .map_err(|e| Failure::fail(format!("cannot make the symlink {}: {e}", link.display())))?;
        let result = async {
            let mut config = kit.shell_config("symlink-volume", "exec sleep 3600").await?;
            config.mounts.push(model::Mount {
                container_path: "/data".into(),
                host_path: link.display().to_string(),
                ..Default::default()
            });
            let id = kit.run(config).await?;
            let listed = kit.sh(&id, "ls -A /data").await?;
            check!(listed.trim() == "flag", "the volume of a symlinked host path holds {listed:?}, not the flag file");
            Ok(())
        }
        .await;
        let _ = std::fs::remove_file(&link);
        result
    })
    .await
}

/// KEP-4639: the kubelet pulls the image of an image volume and sends its ref as Mount.image;
/// the runtime mounts the image's filesystem read-only (the whole image, or image_sub_path in it).
async fn image_volume(ctx: Ctx, sub_path: bool) -> TestResult {
    with_kit(&ctx, "image-volume", |kit| async move {
        let web = kit.image(lockstep_testkit::fixtures::WEB).await?;
        let mut config = kit.shell_config("image-volume", "exec sleep 3600").await?;
        config.mounts.push(model::Mount {
            container_path: "/volume".into(),
            image: Some(model::ImageSpec { image: web.clone(), ..Default::default() }),
            image_sub_path: if sub_path { "www".into() } else { String::new() },
            readonly: true,
            ..Default::default()
        });
        let id = kit.run(config).await?;
        let file = if sub_path { "/volume/index.html" } else { "/volume/www/index.html" };
        let text = kit.exec_ok(&id, &["cat", file]).await?;
        check!(text == "lockstep web fixture\n", "{file} in the image volume holds {text:?}");
        if sub_path {
            let listed = kit.sh(&id, "ls -A /volume").await?;
            check!(listed.trim() == "index.html", "the sub path volume holds {listed:?}, not just www's index.html");
        }
        check!(touch(&kit, &id, "/volume/written").await?.is_err(), "the image volume can be written");
        Ok(())
    })
    .await
}
