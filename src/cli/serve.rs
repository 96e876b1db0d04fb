//! `patchpull serve`: start the server, print where it listens, drain on SIGTERM/SIGINT.

use std::io::Write;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::server::Server;

pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let server = Server::start(config).await?;
        tracing::info!(addr = %server.local_addr(), "patchpull started");
        // Tests and scripts that listen on port 0 read this line to find the port.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "patchpull listening on {}", server.url());
        let _ = out.flush();
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        server.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
