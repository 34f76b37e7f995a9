//! What the voter binaries share: load the config, set up tracing, pick
//! the runtime, wait for SIGTERM / SIGINT.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, NodeKind};

/// Sets up logging: `RUST_LOG` if set, else the config's `log.level`.
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Caps glibc's malloc arenas: per-thread arenas are most of a small
/// daemon's idle RSS and buy nothing at this request rate.
fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator and is called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Hands freed heap back to the kernel now and then. glibc keeps freed
/// memory in its arenas; after a burst (a snapshot, a catch-up of many log
/// entries) that would stay as RSS for good.
async fn trim_heap_periodically() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Loads `path` as `kind`, runs the voter and maps the outcome to an exit code.
pub fn run_voter_binary(path: &Path, kind: NodeKind) -> ExitCode {
    let config = match config::load(path, kind) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log.level);
    let runtime = match kind {
        // The witness does little work; one thread keeps it small.
        NodeKind::Witness => {
            limit_malloc_arenas(1);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        NodeKind::Data => {
            limit_malloc_arenas(2);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        }
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let trimmer = tokio::spawn(trim_heap_periodically());
        let outcome = crate::node::run::run(config, shutdown_signal()).await;
        trimmer.abort();
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pgkeel: {e:#}");
            ExitCode::FAILURE
        }
    }
}
