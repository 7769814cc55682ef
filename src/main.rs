//! `stockraft`: the binary. Parses the command line and hands over to the library.

use clap::Parser;
use stockraft::cli::Cli;
#[cfg(not(madsim))]
use stockraft::cli::{Command, LogFormat};

/// Worker threads of `stockraft bench`'s runtime (the load generator): the machine this targets
/// has 2 cores.
const BENCH_WORKER_THREADS: usize = 2;

/// jemalloc instead of glibc malloc: it hands freed memory back to the OS, so a node's RSS
/// follows its live heap (Cargo.toml says by how much).
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at startup (its `malloc_conf` symbol, a C string): one background
/// thread purges dirty pages ~1 s after they are freed, instead of waiting for more allocation
/// calls, and purged pages go straight back to the OS (no "muzzy" stage). Two arenas instead of
/// jemalloc's default of four per CPU: a node's threads (its runtime, sled's, the checkpoint
/// thread, the blocking pool) each held pages in an arena of their own; at a million records
/// RSS was 262-275 MiB with the default and 237-253 MiB with two (`scripts/scale.sh`, same
/// hour), throughput unchanged.
#[cfg(not(madsim))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 95] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

#[cfg(not(madsim))]
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(log_filter());
    match cli.log_format {
        // Each line carries its spans' fields (the request span's id among them).
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs.init(),
    }
    match cli.command {
        Command::Serve {
            id,
            config,
            addr,
            client_addr,
            join,
            secret_file,
            insecure_open_client,
        } => {
            let config =
                stockraft::config::Config::load_with_secret_file(&config, secret_file.as_deref())?;
            let options = stockraft::server::ServeOptions {
                addr,
                client_addr,
                join,
                insecure_open_client,
            };
            let runtime = stockraft::server::runtime(&config.runtime)?;
            let served = runtime.block_on(stockraft::server::serve(id, config, options));
            if let Some(stopped) = served.as_ref().err().and_then(|e| e.downcast_ref()) {
                exit_raft_stopped(runtime, stopped);
            }
            served
        }
        Command::Bench(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(BENCH_WORKER_THREADS)
                .enable_all()
                .build()?;
            let code = runtime.block_on(stockraft::cli::bench::run(args))?;
            std::process::exit(code)
        }
        Command::Certs(args) => stockraft::cli::certs::run(&args),
        Command::Admin(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = runtime.block_on(stockraft::cli::admin::run(args))?;
            std::process::exit(code)
        }
        Command::Restore(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = runtime.block_on(stockraft::cli::backup::run_restore(args))?;
            std::process::exit(code)
        }
        Command::Inv(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = runtime.block_on(stockraft::cli::inv::run(args))?;
            std::process::exit(code)
        }
    }
}

/// Exits after Raft stopped on its own: stops the runtime's tasks, waiting at most a second for
/// its threads (the disk may be what hangs), logs the cause as the last line, and exits with
/// `RaftStopped::EXIT_CODE` for a supervisor to restart the node. Without the wait, tasks still
/// winding down on the worker threads logged after the cause ("failed to receive from
/// RaftCore"), in about one run of four.
#[cfg(not(madsim))]
fn exit_raft_stopped(
    runtime: tokio::runtime::Runtime,
    stopped: &stockraft::server::RaftStopped,
) -> ! {
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::error!(
        exit_code = stockraft::server::RaftStopped::EXIT_CODE,
        "exiting: raft stopped on a fatal error and this node cannot serve until restarted: {}",
        stopped.cause
    );
    std::process::exit(stockraft::server::RaftStopped::EXIT_CODE)
}

/// `RUST_LOG` if set; else the seed's `LOG_LEVEL` (debug, info, warn, error) for stockraft with
/// openraft kept at warn; else info.
#[cfg(not(madsim))]
fn log_filter() -> tracing_subscriber::EnvFilter {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        return filter;
    }
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    tracing_subscriber::EnvFilter::try_new(format!("{level},openraft=warn"))
        .unwrap_or_else(|_| "info,openraft=warn".into())
}

/// A `--cfg madsim` build exists only to run the simulation tests; it has no real I/O to serve.
#[cfg(madsim)]
fn main() {
    let _ = (Cli::parse, BENCH_WORKER_THREADS);
    eprintln!("stockraft: this is a --cfg madsim build; it runs only the simulation tests");
    std::process::exit(2);
}
