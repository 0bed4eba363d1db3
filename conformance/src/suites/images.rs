//! images: what the kubelet and critest ask of the ImageService — pull by tag and by digest,
//! short names, status by ID / tag / digest, USER as uid or name, lists with all tags,
//! removal (whole, idempotent), ImageFsInfo, StreamImages — and how bad input and broken
//! registries are reported. Images come from the run's registry (fixtures/).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lockstep_cri::{model, CriClient, Minor};

use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};
use lockstep_testkit::fixtures::env::RegistryEnv;
use lockstep_testkit::fixtures::{self, hostile, Fixture};

const AREA: &str = "images";
const REGISTRY: &[Need] = &[Need::Registry];

fn test(name: &'static str, since: Minor, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    let v30 = Minor::V1_30;
    vec![
        test("PullImage by tag returns the image ID, which ImageStatus reports", v30, REGISTRY, |c| {
            Box::pin(pull_by_tag(c))
        }),
        test("PullImage by digest gives the same image ID as by tag", v30, REGISTRY, |c| Box::pin(pull_by_digest(c))),
        test("a reference without a tag is pulled as :latest", v30, REGISTRY, |c| Box::pin(pull_latest(c))),
        test("ImageStatus gives the same answer by ID, by each tag and by each digest", v30, REGISTRY, |c| {
            Box::pin(status_by_every_name(c))
        }),
        test("ImageStatus of an absent image returns no image and no error", v30, REGISTRY, |c| {
            Box::pin(status_absent(c))
        }),
        test("ImageStatus verbose returns the image config", v30, REGISTRY, |c| Box::pin(status_verbose(c))),
        test("an image whose USER is a number, with or without a group, reports it as uid", v30, REGISTRY, |c| {
            Box::pin(user_uid(c))
        }),
        test("an image whose USER is a name, with or without a group, reports it as username", v30, REGISTRY, |c| {
            Box::pin(user_name(c))
        }),
        test("ListImages lists each image once with exactly the tags it was pulled by", v30, REGISTRY, |c| {
            Box::pin(list_tags(c))
        }),
        test(
            "An image pulled from two registries is one image; RemoveImage by one name removes both",
            v30,
            REGISTRY,
            |c| Box::pin(two_registries(c)),
        ),
        test("ListImages with a filter returns only the image it names", v30, REGISTRY, |c| Box::pin(list_filter(c))),
        test("RemoveImage by one tag removes the image with all its tags", v30, REGISTRY, |c| {
            Box::pin(remove_by_tag(c))
        }),
        test("RemoveImage by ID and by digest; removing again succeeds", v30, REGISTRY, |c| {
            Box::pin(remove_idempotent(c))
        }),
        test("RemoveImage of an image ID the runtime never had succeeds, twice", v30, &[], |c| {
            Box::pin(remove_unknown(c))
        }),
        test("concurrent RemoveImage calls of one image all succeed, and each finds it gone", v30, REGISTRY, |c| {
            Box::pin(concurrent_removes(c))
        }),
        test("a multi-platform image resolves to linux on the host's architecture", v30, REGISTRY, |c| {
            Box::pin(multi_platform(c))
        }),
        test("zstd-compressed and uncompressed layers are pulled", v30, REGISTRY, |c| Box::pin(zstd_and_plain(c))),
        test("concurrent pulls of one image all return the same ID", v30, REGISTRY, |c| Box::pin(concurrent_pulls(c))),
        test("a pull that outlives the client's deadline answers DEADLINE_EXCEEDED", v30, REGISTRY, |c| {
            Box::pin(pull_past_deadline(c))
        }),
        test("a pull the kubelet gave up on does not answer a later pull after RemoveImage", v30, REGISTRY, |c| {
            Box::pin(abandoned_pull(c))
        }),
        test("ImageFsInfo reports the image filesystem with used bytes and inodes", v30, &[], |c| Box::pin(fs_info(c))),
        test("ImageFsInfo reports the container filesystem", v30, &[], |c| Box::pin(fs_info_containers(c))),
        // Optional for the kubelet (it falls back to ListImages): Skipped where the RPC is absent.
        test(
            "StreamImages sends what ListImages lists",
            Minor::V1_36,
            &[Need::Registry, Need::Rpc("StreamImages")],
            |c| Box::pin(stream_images(c)),
        ),
        test("PullImage with the credentials in the request", v30, &[Need::AuthRegistry], |c| {
            Box::pin(pull_with_auth(c))
        }),
        test("PullImage of a malformed reference is InvalidArgument naming it", v30, &[], |c| Box::pin(malformed(c))),
        test("PullImage of an image the registry lacks is NotFound", v30, REGISTRY, |c| Box::pin(not_found(c))),
        test("PullImage from an unreachable registry is Unavailable", v30, REGISTRY, |c| Box::pin(unreachable(c))),
        test(
            "a layer whose digest does not match fails the pull and leaves no image",
            v30,
            &[Need::LocalRegistry],
            |c| Box::pin(tampered(c)),
        ),
        test("a truncated gzip layer fails the pull and leaves no image", v30, REGISTRY, |c| Box::pin(truncated(c))),
        test("layers with ../, absolute or symlinked paths fail the pull; nothing escapes", v30, REGISTRY, |c| {
            Box::pin(escapes(c))
        }),
    ]
}

fn env(ctx: &Ctx) -> Result<Arc<RegistryEnv>, Failure> {
    ctx.registry.clone().ok_or_else(|| Failure::skip("no registry"))
}

fn spec(image: &str) -> Option<model::ImageSpec> {
    Some(model::ImageSpec { image: image.to_string(), ..Default::default() })
}

async fn pull(client: &mut CriClient, image: &str) -> Result<String, Failure> {
    pull_raw(client, image).await.map_err(|e| call_failed(&format!("PullImage {image}"), &e))
}

async fn pull_raw(client: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    let r = client.pull_image(model::PullImageRequest { image: spec(image), ..Default::default() }).await?;
    Ok(r.image_ref)
}

async fn status(client: &mut CriClient, image: &str) -> Result<Option<model::Image>, Failure> {
    let r = client
        .image_status(model::ImageStatusRequest { image: spec(image), verbose: false })
        .await
        .map_err(|e| call_failed(&format!("ImageStatus {image}"), &e))?;
    Ok(r.image)
}

async fn remove(client: &mut CriClient, image: &str) -> Result<(), Failure> {
    client
        .remove_image(model::RemoveImageRequest { image: spec(image) })
        .await
        .map(drop)
        .map_err(|e| call_failed(&format!("RemoveImage {image}"), &e))
}

async fn list(client: &mut CriClient) -> Result<Vec<model::Image>, Failure> {
    Ok(client.list_images(Default::default()).await.map_err(|e| call_failed("ListImages", &e))?.images)
}

/// Removes whatever the fixture's ID names, so a test starts from no image.
async fn absent(client: &mut CriClient, fixture: &Fixture) -> Result<(), Failure> {
    remove(client, fixture.id()).await
}

/// Pulls by tag, checks the answer against the fixture, returns the image as ImageStatus says.
async fn pulled(client: &mut CriClient, env: &RegistryEnv, fixture: &Fixture) -> Result<model::Image, Failure> {
    let reference = fixture.reference(&env.host);
    let image_ref = pull(client, &reference).await?;
    check!(
        image_ref == fixture.id(),
        "PullImage {reference} returned image_ref {image_ref:?}, expected the image ID {}",
        fixture.id()
    );
    status(client, &reference)
        .await?
        .ok_or_else(|| Failure::fail(format!("ImageStatus {reference} found nothing after the pull")))
}

async fn pull_by_tag(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let shell = env.fixture(fixtures::SHELL);
    absent(&mut c, shell).await?;
    let image = pulled(&mut c, &env, shell).await?;
    check!(image.id == shell.id(), "ImageStatus id {:?}, expected {}", image.id, shell.id());
    check!(
        image.repo_tags == [shell.reference(&env.host)],
        "repo_tags {:?} are not just {}",
        image.repo_tags,
        shell.reference(&env.host)
    );
    check!(
        image.repo_digests.contains(&shell.digest_reference(&env.host)),
        "repo_digests {:?} lack {}",
        image.repo_digests,
        shell.digest_reference(&env.host)
    );
    check!(image.size > 0, "size is 0");
    Ok(())
}

async fn pull_by_digest(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let uid = env.fixture(fixtures::USER_UID);
    absent(&mut c, uid).await?;
    let digest = uid.digest_reference(&env.host);
    let by_digest = pull(&mut c, &digest).await?;
    let image =
        status(&mut c, &digest).await?.ok_or_else(|| Failure::fail(format!("ImageStatus {digest} found nothing")))?;
    check!(image.repo_tags.is_empty(), "an image pulled by digest only has repo_tags {:?}", image.repo_tags);
    check!(image.repo_digests == [digest.clone()], "pulled by {digest}, it has repo_digests {:?}", image.repo_digests);
    let by_tag = pull(&mut c, &uid.reference(&env.host)).await?;
    check!(
        by_digest == by_tag && by_tag == uid.id(),
        "by digest {by_digest}, by tag {by_tag}, expected {} for both",
        uid.id()
    );
    let listed: Vec<model::Image> = list(&mut c).await?.into_iter().filter(|i| i.id == uid.id()).collect();
    check!(listed.len() == 1, "ListImages shows the image {} times", listed.len());
    Ok(())
}

async fn pull_latest(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let shell = env.fixture(fixtures::SHELL);
    let untagged = format!("{}/{}", env.host, shell.repo);
    let id = pull(&mut c, &untagged).await?;
    check!(id == shell.id(), "pulled {id}, expected {}", shell.id());
    let image = status(&mut c, &format!("{untagged}:latest"))
        .await?
        .ok_or_else(|| Failure::fail("ImageStatus :latest found nothing"))?;
    check!(image.repo_tags.contains(&format!("{untagged}:latest")), "repo_tags {:?} lack :latest", image.repo_tags);
    Ok(())
}

async fn status_by_every_name(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let web = env.fixture(fixtures::WEB);
    pulled(&mut c, &env, web).await?;
    let by_id = status(&mut c, web.id()).await?.ok_or_else(|| Failure::fail("ImageStatus by ID found nothing"))?;
    check!(by_id.id == web.id(), "ImageStatus by ID gave id {}", by_id.id);
    // Every name the runtime reports for the image gives the very same answer (critest).
    let names: Vec<String> = [web.reference(&env.host), web.digest_reference(&env.host)]
        .into_iter()
        .chain(by_id.repo_tags.iter().cloned())
        .chain(by_id.repo_digests.iter().cloned())
        .collect();
    for name in names {
        let image =
            status(&mut c, &name).await?.ok_or_else(|| Failure::fail(format!("ImageStatus {name} found nothing")))?;
        check!(image == by_id, "ImageStatus {name} gave {image:?}, but by ID {by_id:?}");
    }
    Ok(())
}

async fn status_absent(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    for name in [format!("{}/lockstep/never-pushed:1", env.host), format!("sha256:{}", "0".repeat(64))] {
        let found = status(&mut c, &name).await?;
        check!(found.is_none(), "ImageStatus {name} returned {found:?}");
    }
    Ok(())
}

async fn status_verbose(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let web = env.fixture(fixtures::WEB);
    pulled(&mut c, &env, web).await?;
    let r = c
        .image_status(model::ImageStatusRequest { image: spec(web.id()), verbose: true })
        .await
        .map_err(|e| call_failed("ImageStatus", &e))?;
    let text: String = r.info.values().cloned().collect();
    check!(
        text.contains(&format!("{}/tcp", fixtures::WEB_PORT)),
        "verbose info does not show the config's ExposedPorts: {text:.300}"
    );
    Ok(())
}

async fn user_uid(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    for repo in [fixtures::USER_UID, fixtures::USER_UID_GROUP] {
        let image = pulled(&mut c, &env, env.fixture(repo)).await?;
        check!(
            image.uid.as_ref().map(|u| u.value) == Some(fixtures::IMAGE_UID),
            "{repo}: uid {:?}, expected {}",
            image.uid,
            fixtures::IMAGE_UID
        );
        check!(image.username.is_empty(), "{repo}: username {:?} set for a numeric USER", image.username);
    }
    Ok(())
}

async fn user_name(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    for repo in [fixtures::USER_NAME, fixtures::USER_NAME_GROUP] {
        let image = pulled(&mut c, &env, env.fixture(repo)).await?;
        check!(
            image.username == fixtures::IMAGE_USER,
            "{repo}: username {:?}, expected {}",
            image.username,
            fixtures::IMAGE_USER
        );
        check!(image.uid.is_none(), "{repo}: uid {:?} set for a named USER", image.uid);
    }
    Ok(())
}

async fn pull_all_tags(c: &mut CriClient, env: &RegistryEnv) -> Result<Vec<String>, Failure> {
    let tags = env.fixture(fixtures::TAGS);
    let mut names = Vec::new();
    for t in fixtures::TAG_NAMES {
        let name = format!("{}/{}:{t}", env.host, tags.repo);
        pull(c, &name).await?;
        names.push(name);
    }
    Ok(names)
}

async fn list_tags(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let names = pull_all_tags(&mut c, &env).await?;
    let id = env.fixture(fixtures::TAGS).id();
    let listed: Vec<model::Image> = list(&mut c).await?.into_iter().filter(|i| i.id == id).collect();
    check!(listed.len() == 1, "ListImages shows image {id} {} times", listed.len());
    for n in &names {
        check!(listed[0].repo_tags.contains(n), "repo_tags {:?} lack {n}", listed[0].repo_tags);
    }
    // An image pulled by one tag only lists that tag, nothing more.
    let uid = env.fixture(fixtures::USER_UID);
    absent(&mut c, uid).await?;
    pulled(&mut c, &env, uid).await?;
    let listed: Vec<model::Image> = list(&mut c).await?.into_iter().filter(|i| i.id == uid.id()).collect();
    check!(listed.len() == 1, "ListImages shows image {} {} times", uid.id(), listed.len());
    check!(
        listed[0].repo_tags == [uid.reference(&env.host)],
        "an image pulled by one tag lists repo_tags {:?}",
        listed[0].repo_tags
    );
    Ok(())
}

/// critest: the same image under two registries' names (its mirrors of registry.k8s.io and
/// k8s.gcr.io) is one image with both tags, and removing it by one name removes it by every
/// name. Here the two names of the run's registry are 127.0.0.1:PORT and localhost:PORT.
async fn two_registries(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let own = env.fixture(fixtures::OWN_REGISTRIES);
    let Some((_, port)) = env.host.rsplit_once(':').filter(|(h, _)| *h == "127.0.0.1") else {
        return Err(Failure::skip(format!("the registry {} is not on 127.0.0.1, so it has no second name", env.host)));
    };
    let first = own.reference(&env.host);
    let second = own.reference(&format!("localhost:{port}"));
    absent(&mut c, own).await?;
    let (a, b) = (pull(&mut c, &first).await?, pull(&mut c, &second).await?);
    check!(a == own.id() && b == own.id(), "pulled {first} as {a} and {second} as {b}, expected {}", own.id());
    let listed: Vec<model::Image> = list(&mut c).await?.into_iter().filter(|i| i.id == own.id()).collect();
    check!(listed.len() == 1, "ListImages shows the image {} times", listed.len());
    for name in [&first, &second] {
        check!(listed[0].repo_tags.contains(name), "repo_tags {:?} lack {name}", listed[0].repo_tags);
    }
    remove(&mut c, &first).await?;
    for name in [first.as_str(), second.as_str(), own.id()] {
        let found = status(&mut c, name).await?;
        check!(
            found.is_none(),
            "after RemoveImage {first}, ImageStatus {name} still finds {:?}",
            found.map(|i| i.repo_tags)
        );
    }
    Ok(())
}

async fn list_filter(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let web = env.fixture(fixtures::WEB);
    pulled(&mut c, &env, web).await?;
    pulled(&mut c, &env, env.fixture(fixtures::USER_UID)).await?;
    let filter = Some(model::ImageFilter { image: spec(&web.reference(&env.host)) });
    let r = c.list_images(model::ListImagesRequest { filter }).await.map_err(|e| call_failed("ListImages", &e))?;
    let ids: Vec<&str> = r.images.iter().map(|i| i.id.as_str()).collect();
    check!(ids == vec![web.id()], "ListImages filtered by {} returned {ids:?}", web.reference(&env.host));
    Ok(())
}

async fn remove_by_tag(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let names = pull_all_tags(&mut c, &env).await?;
    remove(&mut c, &names[1]).await?;
    for n in &names {
        let found = status(&mut c, n).await?;
        check!(
            found.is_none(),
            "after RemoveImage {}, ImageStatus {n} still finds {:?}",
            names[1],
            found.map(|i| i.repo_tags)
        );
    }
    let id = env.fixture(fixtures::TAGS).id();
    check!(!list(&mut c).await?.iter().any(|i| i.id == id), "ListImages still lists {id}");
    Ok(())
}

async fn remove_idempotent(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let name = env.fixture(fixtures::USER_NAME);
    pulled(&mut c, &env, name).await?;
    remove(&mut c, name.id()).await?;
    check!(status(&mut c, name.id()).await?.is_none(), "RemoveImage by ID left the image");
    remove(&mut c, name.id()).await?;
    pulled(&mut c, &env, name).await?;
    let digest = name.digest_reference(&env.host);
    remove(&mut c, &digest).await?;
    check!(status(&mut c, &name.reference(&env.host)).await?.is_none(), "RemoveImage by digest left the image");
    remove(&mut c, &digest).await?;
    remove(&mut c, &format!("{}/lockstep/never-pushed:1", env.host)).await?;
    Ok(())
}

/// critest's Idempotence spec: an ID of 64 zeros, removed twice. The `sha256:` form too, as
/// the kubelet's image garbage collector sends IDs.
async fn remove_unknown(ctx: Ctx) -> TestResult {
    let mut c = ctx.kubelet();
    let zeros = "0".repeat(64);
    for name in [zeros.clone(), format!("sha256:{zeros}")] {
        for round in 1..=2 {
            c.remove_image(model::RemoveImageRequest { image: spec(&name) }).await.map_err(|e| {
                Failure::fail(format!(
                    "RemoveImage #{round} of {name}, which was never pulled: {:?}: {} (the CRI says removing an image \
                     that is gone succeeds)",
                    e.code(),
                    e.message()
                ))
            })?;
        }
    }
    Ok(())
}

/// critest's Image Consistency spec: five RemoveImage calls at once; every one succeeds, and
/// ImageStatus right after each finds nothing (no call answers before the image is gone).
async fn concurrent_removes(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let own = env.fixture(fixtures::OWN_REMOVED);
    pulled(&mut c, &env, own).await?;
    let id = own.id().to_string();
    let calls = (0..5).map(|_| {
        let (mut client, id) = (ctx.kubelet(), id.clone());
        async move {
            let removed = client.remove_image(model::RemoveImageRequest { image: spec(&id) }).await;
            let after = status(&mut client, &id).await;
            (removed, after)
        }
    });
    for (i, (removed, after)) in futures::future::join_all(calls).await.into_iter().enumerate() {
        removed.map_err(|e| call_failed(&format!("concurrent RemoveImage #{i}"), &e))?;
        check!(after?.is_none(), "ImageStatus right after concurrent RemoveImage #{i} returned still finds the image");
    }
    check!(status(&mut c, &own.reference(&env.host)).await?.is_none(), "the image is still there by its tag");
    Ok(())
}

async fn multi_platform(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let multi = env.fixture(fixtures::MULTIARCH);
    absent(&mut c, multi).await?;
    pulled(&mut c, &env, multi).await?;
    Ok(())
}

async fn zstd_and_plain(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let zstd = env.fixture(fixtures::ZSTD);
    absent(&mut c, zstd).await?;
    pulled(&mut c, &env, zstd).await?;
    Ok(())
}

async fn concurrent_pulls(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let whiteout = env.fixture(fixtures::WHITEOUT);
    absent(&mut c, whiteout).await?;
    let reference = whiteout.reference(&env.host);
    let pulls = (0..4).map(|_| {
        let mut client = ctx.kubelet();
        let r = reference.clone();
        async move { pull_raw(&mut client, &r).await }
    });
    let ids = futures::future::join_all(pulls).await;
    for id in ids {
        let id = id.map_err(|e| call_failed("PullImage", &e))?;
        check!(id == whiteout.id(), "a concurrent pull returned {id}, expected {}", whiteout.id());
    }
    let listed = list(&mut c).await?.into_iter().filter(|i| i.id == whiteout.id()).count();
    check!(listed == 1, "ListImages shows the image {listed} times");
    Ok(())
}

/// critest's "should timeout if requested": a pull whose deadline (grpc-timeout) passes is
/// answered DEADLINE_EXCEEDED. When the client's own timer fires late (a loaded machine), the
/// runtime's answer is what it sees, so CANCELLED (tonic's default) fails critest.
async fn pull_past_deadline(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let own = env.fixture(fixtures::OWN_CANCELLED);
    absent(&mut c, own).await?;
    // Sent past tonic's channel, whose own timer would answer CANCELLED before the runtime.
    let request = model::PullImageRequest { image: spec(&own.reference(&env.host)), ..Default::default() };
    let path = "/runtime.v1.ImageService/PullImage";
    let answer = crate::framework::raw_grpc::unary_status(&ctx.endpoint, path, &request, Duration::from_millis(5))
        .await
        .map_err(|e| Failure::Fail(format!("PullImage over a raw HTTP/2 connection: {e:#}")));
    // A runtime that goes on with the pull may finish it: the next test starts from nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    absent(&mut c, own).await?;
    let status = answer?;
    check!(status.code() != tonic::Code::Ok, "PullImage with a 5 ms deadline succeeded: no pull is that fast");
    check!(
        status.code() == tonic::Code::DeadlineExceeded,
        "PullImage past a 5 ms deadline answered {:?} ({}), expected DeadlineExceeded",
        status.code(),
        status.message()
    );
    Ok(())
}

/// critest's "should timeout if requested" leaves such a pull behind: the runtime may finish
/// it or drop it, but a later pull must pull again, not answer with the old result.
async fn abandoned_pull(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let own = env.fixture(fixtures::OWN_CANCELLED);
    let reference = own.reference(&env.host);
    absent(&mut c, own).await?;
    let mut hasty = ctx.kubelet();
    hasty.set_timeout(Some(Duration::from_millis(5)));
    let _ = pull_raw(&mut hasty, &reference).await;
    // Give a runtime that goes on with the pull the time to finish it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while status(&mut c, &reference).await?.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    absent(&mut c, own).await?;
    check!(status(&mut c, &reference).await?.is_none(), "RemoveImage {} left the image", own.id());
    pulled(&mut c, &env, own).await?;
    absent(&mut c, own).await
}

/// The pid of the runtime behind a unix-socket endpoint (SO_PEERCRED), to look at the host as
/// the runtime sees it (`/proc/PID/root`, its own mount namespace included). None otherwise.
fn runtime_pid(endpoint: &str) -> Option<u32> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    let cred = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    u32::try_from(cred.pid()).ok().filter(|pid| *pid > 0)
}

/// `path` as the runtime process sees it.
fn in_runtime(pid: u32, path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/{pid}/root/{}", path.trim_start_matches('/')))
}

fn check_usage(ctx: &Ctx, kind: &str, usage: &[model::FilesystemUsage]) -> TestResult {
    check!(!usage.is_empty(), "ImageFsInfo.{kind} is empty");
    let pid = runtime_pid(&ctx.endpoint);
    for u in usage {
        let mount = u.fs_id.as_ref().map(|f| f.mountpoint.as_str()).unwrap_or("");
        check!(!mount.is_empty(), "{kind}: an entry has no mountpoint");
        if let Some(pid) = pid {
            // The kubelet's stats provider stats it (cadvisor's GetDirFsInfo).
            check!(in_runtime(pid, mount).is_dir(), "{kind}: the mountpoint {mount} does not exist");
        }
        check!(u.used_bytes.is_some(), "{kind} {mount}: used_bytes is absent");
        check!(u.inodes_used.is_some(), "{kind} {mount}: inodes_used is absent");
        check!(u.timestamp > 0, "{kind} {mount}: timestamp is 0");
    }
    Ok(())
}

async fn fs_info(ctx: Ctx) -> TestResult {
    let r = ctx.kubelet().image_fs_info(Default::default()).await.map_err(|e| call_failed("ImageFsInfo", &e))?;
    check_usage(&ctx, "image_filesystems", &r.image_filesystems)?;
    if let Some(env) = &ctx.registry {
        let mut c = ctx.kubelet();
        pulled(&mut c, env, env.fixture(fixtures::SHELL)).await?;
        // Some runtimes measure in the background (containerd every 10 s): allow for one round.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = c.image_fs_info(Default::default()).await.map_err(|e| call_failed("ImageFsInfo", &e))?;
            let used: u64 = r.image_filesystems.iter().filter_map(|u| u.used_bytes.as_ref()).map(|u| u.value).sum();
            if used > 1 << 20 {
                break;
            }
            check!(
                std::time::Instant::now() < deadline,
                "with busybox pulled the image filesystem still uses only {used} bytes after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

async fn fs_info_containers(ctx: Ctx) -> TestResult {
    let r = ctx.kubelet().image_fs_info(Default::default()).await.map_err(|e| call_failed("ImageFsInfo", &e))?;
    check_usage(&ctx, "container_filesystems (1.29, KEP-4191)", &r.container_filesystems)
}

async fn stream_images(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    pulled(&mut c, &env, env.fixture(fixtures::SHELL)).await?;
    let mut listed: Vec<String> = list(&mut c).await?.into_iter().map(|i| i.id).collect();
    let mut stream = c.stream_images(Default::default()).await.map_err(|e| call_failed("StreamImages", &e))?;
    let mut streamed = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| call_failed("StreamImages", &e))?;
        streamed.extend(batch.images.into_iter().map(|i| i.id));
    }
    listed.sort();
    streamed.sort();
    check!(listed == streamed, "StreamImages sent {streamed:?}, ListImages lists {listed:?}");
    Ok(())
}

async fn pull_with_auth(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let host = env.auth_host.clone().ok_or_else(|| Failure::skip("no auth registry"))?;
    let mut c = ctx.kubelet();
    let shell = env.fixture(fixtures::SHELL);
    let image = shell.reference(&host);
    let request =
        |auth: Option<model::AuthConfig>| model::PullImageRequest { image: spec(&image), auth, ..Default::default() };
    let anonymous = c.pull_image(request(None)).await;
    check!(anonymous.is_err(), "a pull without credentials from a registry that wants them succeeded");
    let wrong = model::AuthConfig {
        username: fixtures::registry::AUTH_USER.into(),
        password: "wrong".into(),
        ..Default::default()
    };
    check!(c.pull_image(request(Some(wrong))).await.is_err(), "a pull with a wrong password succeeded");
    let right = model::AuthConfig {
        username: fixtures::registry::AUTH_USER.into(),
        password: fixtures::registry::AUTH_PASSWORD.into(),
        server_address: host.clone(),
        ..Default::default()
    };
    let id =
        c.pull_image(request(Some(right))).await.map_err(|e| call_failed("PullImage with credentials", &e))?.image_ref;
    check!(id == shell.id(), "pulled {id}, expected {}", shell.id());
    remove(&mut c, &image).await
}

/// Runs a pull that must fail; returns its status.
async fn failing_pull(c: &mut CriClient, image: &str) -> Result<tonic::Status, Failure> {
    match pull_raw(c, image).await {
        Ok(id) => Err(Failure::fail(format!("PullImage {image} succeeded ({id})"))),
        Err(e) => Ok(e),
    }
}

async fn malformed(ctx: Ctx) -> TestResult {
    let mut c = ctx.kubelet();
    for bad in ["UPPER/Case:1", "a//b", "busybox:-tag", "busybox@sha256:abc"] {
        let e = failing_pull(&mut c, bad).await?;
        check!(
            e.code() == tonic::Code::InvalidArgument,
            "PullImage {bad:?}: {:?} ({}), expected InvalidArgument",
            e.code(),
            e.message()
        );
        check!(e.message().contains(bad), "PullImage {bad:?}: the message does not name it: {}", e.message());
    }
    Ok(())
}

async fn not_found(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    for image in
        [format!("{}/lockstep/never-pushed:1", env.host), format!("{}/{}:no-such-tag", env.host, fixtures::SHELL)]
    {
        let e = failing_pull(&mut c, &image).await?;
        check!(
            e.code() == tonic::Code::NotFound,
            "PullImage {image}: {:?} ({}), expected NotFound",
            e.code(),
            e.message()
        );
    }
    Ok(())
}

async fn unreachable(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let mut c = ctx.kubelet();
    let image = format!("{}/lockstep/shell:1", env.dead_host);
    let e = failing_pull(&mut c, &image).await?;
    check!(
        e.code() == tonic::Code::Unavailable,
        "PullImage {image}: {:?} ({}), expected Unavailable",
        e.code(),
        e.message()
    );
    check!(e.message().contains(&env.dead_host), "the message does not name the registry: {}", e.message());
    Ok(())
}

/// A pull that must fail with a message containing one of `words`, and leave no image.
async fn rejected(ctx: &Ctx, fixture: &Fixture, words: &[&str]) -> TestResult {
    let env = env(ctx)?;
    let mut c = ctx.kubelet();
    let image = fixture.reference(&env.host);
    let e = failing_pull(&mut c, &image).await?;
    let message = e.message().to_lowercase();
    check!(
        words.iter().any(|w| message.contains(w)),
        "PullImage {image} failed without saying why ({words:?}): {:?}: {}",
        e.code(),
        e.message()
    );
    check!(status(&mut c, &image).await?.is_none(), "after the failed pull ImageStatus {image} finds an image");
    check!(
        !list(&mut c).await?.iter().any(|i| i.id == fixture.id()),
        "after the failed pull ListImages lists {}",
        fixture.id()
    );
    Ok(())
}

async fn tampered(ctx: Ctx) -> TestResult {
    let env = env(&ctx)?;
    let fixture = env.tampered.clone().ok_or_else(|| Failure::skip("no tampered image"))?;
    rejected(&ctx, &fixture, &["digest"]).await
}

async fn truncated(ctx: Ctx) -> TestResult {
    rejected(&ctx, &hostile::truncated(), &["gzip", "unexpected eof", "unexpected end"]).await
}

async fn escapes(ctx: Ctx) -> TestResult {
    let marker = std::path::Path::new("/tmp/lockstep-escaped");
    let _ = std::fs::remove_file(marker);
    for fixture in hostile::escapes() {
        rejected(&ctx, &fixture, &["escape", "..", "absolute", "symlink", "path", "breakout", "link"]).await?;
    }
    check!(!marker.exists(), "a layer wrote {} outside the root", marker.display());
    Ok(())
}
