//! Containers through testcontainers, all driven on one runtime of their own: the Docker client
//! testcontainers shares must not be tied to one test's runtime, which ends with the test.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::Spec;

/// Run `f` on the Docker runtime and wait for its result (from sync or async code).
fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Option<T> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ssehub-docker")
            .enable_all()
            .build()
            .ok()
    });
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.as_ref()?.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().ok()
}

/// A started container with the server's port mapped to the same host port for its life.
pub(super) struct Container {
    inner: Option<Arc<ContainerAsync<GenericImage>>>,
    id: String,
    host: String,
}

impl Container {
    pub(super) fn create(spec: &Spec, port: u16, dir: &Path) -> Result<Self, String> {
        let (name, tag) = spec.image;
        let mut request = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_mapped_port(port, ContainerPort::Tcp(spec.container_port))
            .with_cmd(spec.container_args.clone())
            .with_startup_timeout(super::START_LIMIT);
        for (file, _) in &spec.files {
            request = request.with_copy_to(format!("/etc/ssehub/{file}"), dir.join(file));
        }
        let started = block_on(async move {
            let c = request.start().await.map_err(|e| e.to_string())?;
            let host = c.get_host().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((c, host.to_string()))
        })
        .ok_or("the Docker runtime is gone")?
        .map_err(|e| format!("cannot start a {name}:{tag} container: {e}"))?;
        let (c, host) = started;
        Ok(Container {
            id: c.id().to_owned(),
            inner: Some(Arc::new(c)),
            host,
        })
    }

    pub(super) fn host(&self) -> &str {
        &self.host
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    fn run<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: impl FnOnce(Arc<ContainerAsync<GenericImage>>) -> F,
    ) -> Option<T> {
        let c = self.inner.clone()?;
        block_on(f(c))
    }

    pub(super) fn log(&self) -> String {
        self.run(|c| async move {
            let mut log = c.stdout_to_vec().await.unwrap_or_default();
            log.extend(c.stderr_to_vec().await.unwrap_or_default());
            String::from_utf8_lossy(&log).into_owned()
        })
        .unwrap_or_default()
    }

    pub(super) fn pause(&self, pause: bool) -> bool {
        self.run(|c| async move {
            if pause {
                c.pause().await.is_ok()
            } else {
                c.unpause().await.is_ok()
            }
        })
        .unwrap_or(false)
    }

    /// Stop with no grace period: SIGKILL.
    pub(super) fn kill(&self) {
        let _ = self.run(|c| async move { c.stop_with_timeout(Some(0)).await });
    }

    pub(super) fn resume(&self) -> Result<(), String> {
        self.run(|c| async move { c.start().await.map_err(|e| e.to_string()) })
            .ok_or("the Docker runtime is gone")?
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(c) = self.inner.take() {
            // Removed on the Docker runtime, where its client lives.
            let _ = block_on(async move {
                if let Ok(c) = Arc::try_unwrap(c) {
                    let _ = c.rm().await;
                }
            });
        }
    }
}
