//! Exec, Attach and PortForward: each checks its request (a running container, an existing
//! pod) and answers with a single-use URL of the streaming server; the `Backend` here is what
//! the server reaches when the URL is opened — the container manager for exec, the sandbox's
//! network namespace for port forwarding.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use lockstep_cri::model;
use tonic::Status;

use super::{blocking, Containers, Sandboxes};
use crate::monitor::attach::AttachFlags;
use crate::sandbox::namespaces::{self, NsKind};
use crate::streaming::attach;
use crate::streaming::process::{self, ConsoleSocket};
use crate::streaming::{Backend, CommandIo, ExecResult, Request, Settings, StreamServer, TokenError};

/// The streaming server and what its URLs reach.
pub struct Streaming {
    server: StreamServer,
    containers: Arc<Containers>,
    sandboxes: Arc<Sandboxes>,
}

impl Streaming {
    /// Starts the server on `settings`; exec terminals are received in `console_dir`.
    pub async fn start(
        settings: Settings,
        containers: Arc<Containers>,
        sandboxes: Arc<Sandboxes>,
        console_dir: PathBuf,
    ) -> Result<Streaming, crate::streaming::StreamError> {
        let backend = Arc::new(Reach { containers: containers.clone(), sandboxes: sandboxes.clone(), console_dir });
        let server = StreamServer::start(settings, backend).await?;
        Ok(Streaming { server, containers, sandboxes })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    fn url(&self, request: Request) -> Result<String, Status> {
        self.server.url(request).map_err(|e| match e {
            TokenError::Full => Status::resource_exhausted(e.to_string()),
            TokenError::Random(_) => Status::internal(e.to_string()),
        })
    }
}

pub async fn exec(streaming: &Arc<Streaming>, request: model::ExecRequest) -> Result<model::ExecResponse, Status> {
    if request.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd: is empty"));
    }
    if !(request.stdin || request.stdout || request.stderr) {
        return Err(Status::invalid_argument("one of stdin, stdout and stderr must be set"));
    }
    let containers = streaming.containers.clone();
    let id = request.container_id.clone();
    blocking(move || containers.running_for_stream(&id, "exec needs a running container").map(drop)).await?;
    Ok(model::ExecResponse { url: streaming.url(Request::Exec(request))? })
}

pub async fn attach(
    streaming: &Arc<Streaming>,
    request: model::AttachRequest,
) -> Result<model::AttachResponse, Status> {
    if !(request.stdin || request.stdout || request.stderr) {
        return Err(Status::invalid_argument("one of stdin, stdout and stderr must be set"));
    }
    let containers = streaming.containers.clone();
    let id = request.container_id.clone();
    blocking(move || containers.running_for_stream(&id, "attach needs a running container").map(drop)).await?;
    Ok(model::AttachResponse { url: streaming.url(Request::Attach(request))? })
}

pub async fn port_forward(
    streaming: &Arc<Streaming>,
    request: model::PortForwardRequest,
) -> Result<model::PortForwardResponse, Status> {
    if streaming.sandboxes.get(&request.pod_sandbox_id).is_none() {
        return Err(Status::not_found(format!("pod sandbox {:?} does not exist", request.pod_sandbox_id)));
    }
    if let Some(bad) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!("port: {bad} is not a TCP port")));
    }
    Ok(model::PortForwardResponse { url: streaming.url(Request::PortForward(request))? })
}

/// The `Backend` of lockstepd's streaming server.
struct Reach {
    containers: Arc<Containers>,
    sandboxes: Arc<Sandboxes>,
    console_dir: PathBuf,
}

static CONSOLES: AtomicU64 = AtomicU64::new(0);

impl Backend for Reach {
    fn exec(&self, request: model::ExecRequest, io: CommandIo) -> BoxFuture<'static, ExecResult> {
        let (containers, dir) = (self.containers.clone(), self.console_dir.clone());
        Box::pin(async move {
            let console = if request.tty {
                let name = format!("exec-{}-{}.sock", std::process::id(), CONSOLES.fetch_add(1, Ordering::Relaxed));
                let socket = ConsoleSocket::bind(&dir, &name)
                    .map_err(|e| format!("cannot bind a console socket in {}: {e}", dir.display()))?;
                Some(socket)
            } else {
                None
            };
            let path = console.as_ref().map(|c| c.path().to_path_buf());
            let (id, cmd) = (request.container_id.clone(), request.cmd.clone());
            let prepared =
                tokio::task::spawn_blocking(move || containers.prepare_stream_exec(&id, &cmd, path.as_deref()))
                    .await
                    .map_err(|e| format!("preparing the exec panicked: {e}"))?
                    .map_err(|e| e.to_string())?;
            process::run(prepared, console, io).await
        })
    }

    fn attach(&self, request: model::AttachRequest, io: CommandIo) -> BoxFuture<'static, Result<(), String>> {
        let containers = self.containers.clone();
        Box::pin(async move {
            let flags = AttachFlags { stdin: request.stdin, stdout: request.stdout, stderr: request.stderr };
            let conn = tokio::task::spawn_blocking(move || {
                let record = containers
                    .running_for_stream(&request.container_id, "attach needs a running container")
                    .map_err(|e| e.to_string())?;
                attach::open(&record.run_dir, flags)
            })
            .await
            .map_err(|e| format!("opening the attach stream panicked: {e}"))??;
            attach::run(conn, io).await
        })
    }

    fn connect(&self, sandbox_id: String, port: u16) -> BoxFuture<'static, Result<tokio::net::TcpStream, String>> {
        let sandboxes = self.sandboxes.clone();
        Box::pin(async move {
            let record = sandboxes.get(&sandbox_id).ok_or_else(|| format!("pod sandbox {sandbox_id} is gone"))?;
            let netns = record.namespaces.network.clone();
            let connected = tokio::task::spawn_blocking(move || {
                let dial = || {
                    std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                        .or_else(|_| std::net::TcpStream::connect((Ipv6Addr::LOCALHOST, port)))
                };
                match &netns {
                    // A throwaway thread enters the pod's network namespace; the socket stays in it.
                    Some(path) => namespaces::within(&[(NsKind::Net, path.as_path())], || {
                        dial().map_err(|e| namespaces::NsError::Io {
                            what: "connect in",
                            path: path.clone(),
                            source: e,
                        })
                    })
                    .map_err(|e| e.to_string()),
                    None => dial().map_err(|e| e.to_string()),
                }
            })
            .await
            .map_err(|e| format!("connecting panicked: {e}"))?;
            let conn = connected.map_err(|e| {
                format!("error forwarding port {port} to pod {sandbox_id}: failed to connect to localhost:{port}: {e}")
            })?;
            conn.set_nonblocking(true).map_err(|e| e.to_string())?;
            let _ = conn.set_nodelay(true);
            tokio::net::TcpStream::from_std(conn).map_err(|e| e.to_string())
        })
    }
}
