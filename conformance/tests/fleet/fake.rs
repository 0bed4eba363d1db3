//! An in-process Kubernetes API server for `fleet`'s tests: the real paths kube's client uses for
//! nodes, Jobs, pods and pod logs, over plain HTTP on a local port. Each node's Job succeeds with
//! a given log, fails, or never ends; every request and DELETE is recorded for the assertions.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

pub const TOKEN: &str = "fleet-test-token";

/// What a node's Job does.
#[derive(Clone)]
pub enum Behaviour {
    /// Completes; its pod's log is this.
    Succeed(String),
    /// Fails (BackoffLimitExceeded); its pod's log is this.
    Fail(String),
    /// Stays active for ever.
    Hang,
}

pub struct FakeNode {
    pub name: &'static str,
    pub labels: &'static [(&'static str, &'static str)],
    pub behaviour: Behaviour,
}

#[derive(Default)]
pub struct Seen {
    /// `METHOD path?query` of every request.
    pub requests: Vec<String>,
    /// Job name → the Job as created.
    pub created: BTreeMap<String, Value>,
    /// Job name → the DELETE's body (its propagationPolicy).
    pub deleted: BTreeMap<String, Value>,
}

pub struct Fake {
    nodes: Vec<FakeNode>,
    /// Every request answered with this status (401, 403) when set.
    refuse: Option<u16>,
    pub seen: Mutex<Seen>,
}

impl Fake {
    /// Serves on 127.0.0.1 at a free port until the test ends.
    pub async fn start(nodes: Vec<FakeNode>, refuse: Option<u16>) -> (Arc<Fake>, SocketAddr) {
        let fake = Arc::new(Fake { nodes, refuse, seen: Mutex::new(Seen::default()) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let fake = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (fake, address)
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = query(request.uri().query().unwrap_or(""));
        let authorized =
            request.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
        self.seen.lock().unwrap().requests.push(format!("{method} {}", request.uri()));
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if let Some(code) = self.refuse {
            return status(code, "Forbidden", "nodes is forbidden: User \"system:anonymous\" cannot list resource \"nodes\" in API group \"\" at the cluster scope");
        }
        if !authorized {
            return status(401, "Unauthorized", "Unauthorized");
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, parts.as_slice()) {
            (&Method::GET, ["api", "v1", "nodes"]) => {
                let wanted = selector(query.get("labelSelector"));
                let items: Vec<Value> = self
                    .nodes
                    .iter()
                    .filter(|n| wanted.iter().all(|(k, v)| n.labels.iter().any(|(nk, nv)| nk == k && nv == v)))
                    .map(|n| {
                        let labels: BTreeMap<&str, &str> = n.labels.iter().copied().collect();
                        json!({"metadata": {"name": n.name, "labels": labels}})
                    })
                    .collect();
                ok(json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items}))
            }
            (&Method::POST, ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => {
                let Ok(mut job) = serde_json::from_slice::<Value>(&body) else {
                    return status(400, "BadRequest", "the Job does not parse");
                };
                if job["metadata"]["namespace"] != *ns {
                    return status(400, "BadRequest", "the Job's namespace is not the URL's");
                }
                let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
                job["metadata"]["uid"] = json!(format!("uid-{name}"));
                job["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                self.seen.lock().unwrap().created.insert(name, job.clone());
                respond(StatusCode::CREATED, job)
            }
            (&Method::GET, ["apis", "batch", "v1", "namespaces", _ns, "jobs"]) => {
                let wanted = selector(query.get("labelSelector"));
                let seen = self.seen.lock().unwrap();
                let items: Vec<Value> = seen
                    .created
                    .iter()
                    .filter(|(name, _)| !seen.deleted.contains_key(*name))
                    .filter(|(_, job)| wanted.iter().all(|(k, v)| job["metadata"]["labels"][k] == *v))
                    .map(|(_, job)| {
                        let mut job = job.clone();
                        job["status"] = self.job_status(&job);
                        job
                    })
                    .collect();
                ok(json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items}))
            }
            (&Method::DELETE, ["apis", "batch", "v1", "namespaces", _ns, "jobs", name]) => {
                let mut seen = self.seen.lock().unwrap();
                if !seen.created.contains_key(*name) || seen.deleted.contains_key(*name) {
                    return status(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
                }
                let options = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
                seen.deleted.insert(name.to_string(), options);
                ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
            }
            (&Method::GET, ["api", "v1", "namespaces", _ns, "pods"]) => {
                let wanted = selector(query.get("labelSelector"));
                let job = wanted.iter().find(|(k, _)| k == "job-name").map(|(_, v)| v.clone()).unwrap_or_default();
                let exists = self.seen.lock().unwrap().created.contains_key(&job);
                let items = if exists {
                    // A Job that never ends has a pod that never got its image.
                    let status = match self.behaviour(&job) {
                        Some(Behaviour::Hang) => json!({"phase": "Pending", "containerStatuses": [{
                            "name": "conformance", "image": "x", "imageID": "", "ready": false,
                            "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                            "message": "Back-off pulling image \"x\""}}}]}),
                        _ => json!({"phase": "Succeeded"}),
                    };
                    vec![json!({"metadata": {"name": format!("{job}-pod"), "labels": {"job-name": job},
                                             "creationTimestamp": "2026-01-01T00:00:01Z"},
                                "status": status})]
                } else {
                    vec![]
                };
                ok(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}))
            }
            (&Method::GET, ["api", "v1", "namespaces", _ns, "pods", pod, "log"]) => {
                let job = pod.trim_end_matches("-pod");
                match self.behaviour(job) {
                    Some(Behaviour::Succeed(log) | Behaviour::Fail(log)) => text(log),
                    _ => status(400, "BadRequest", "container \"conformance\" is waiting to start"),
                }
            }
            _ => status(404, "NotFound", &format!("the server could not find the requested resource ({path})")),
        }
    }

    fn behaviour(&self, job: &str) -> Option<Behaviour> {
        let seen = self.seen.lock().unwrap();
        let node = seen.created.get(job)?["spec"]["template"]["spec"]["nodeName"].as_str()?.to_string();
        self.nodes.iter().find(|n| n.name == node).map(|n| n.behaviour.clone())
    }

    fn job_status(&self, job: &Value) -> Value {
        let node = job["spec"]["template"]["spec"]["nodeName"].as_str().unwrap_or("");
        match self.nodes.iter().find(|n| n.name == node).map(|n| &n.behaviour) {
            Some(Behaviour::Succeed(_)) => json!({
                "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}],
            }),
            Some(Behaviour::Fail(_)) => json!({
                "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                "message": "Job has reached the specified backoff limit"}],
            }),
            _ => json!({"active": 1}),
        }
    }
}

fn query(text: &str) -> BTreeMap<String, String> {
    text.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2=v2` (equality only, what the tests send).
fn selector(text: Option<&String>) -> Vec<(String, String)> {
    text.map(|t| t.split(',').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .unwrap_or_default()
}

fn respond(code: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn ok(body: Value) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, body)
}

fn text(body: String) -> Response<Full<Bytes>> {
    Response::builder().header("content-type", "text/plain").body(Full::new(Bytes::from(body))).unwrap()
}

/// A metav1.Status, as the API server refuses.
fn status(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}
