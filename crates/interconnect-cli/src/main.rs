//! `interconnect`: run a phone hub, a watch client, or a self-checking demo over TCP.
//!
//! Every command prints its results as JSON lines on stdout; failures print
//! `{"code":N,"message":…}` and exit non-zero. Logs (`-v`, `-vv`) go to stderr.
//!
//! Links are Noise-encrypted and mutually authenticated; see [`security`] for the
//! identity and trust flags.

/// Prints a line on stdout, as `println!` does, except that a reader gone away (a closed
/// pipe: `… | head`) ends the process quietly, as command-line tools do, not in a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}

mod args;
mod commands;
mod output;
mod security;

use args::*;
use clap::Parser;
use commands::*;
use interconnect::{FilesConfig, Security};
use interconnect_proto::{Code, DeviceId};
use output::*;
use std::process::ExitCode;
use std::time::Duration;

/// The device id that goes with the device key (random in plaintext mode).
pub(crate) fn device_id(security: &Security) -> DeviceId {
    match security {
        Security::Noise(noise) => noise.identity.device_id(),
        _ => DeviceId(rand::random()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(Code::OTHERS, &format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Demo => demo().await,
            Command::Phone {
                listen,
                package,
                app_version,
                signature,
                files_dir,
                reserve_free_mib,
                echo,
                handle_ms,
                max_watches,
                admit_secs,
                store,
                security,
            } => {
                let app = PhoneApp {
                    package,
                    version: app_version,
                    signature,
                    handle: Duration::from_millis(handle_ms),
                    max_watches,
                    admit: Duration::from_secs(admit_secs),
                    store,
                };
                let mut files = FilesConfig::new(files_dir);
                files.reserve_free_bytes = reserve_free_mib.saturating_mul(1 << 20);
                phone(listen, app, files, echo, &security).await
            }
            Command::Watch {
                connect,
                package,
                signature,
                timeout_ms,
                name,
                store,
                security,
                command,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                let target = WatchTarget {
                    connect,
                    package,
                    signature,
                    name,
                    store,
                };
                watch(target, timeout, &security, command).await
            }
            Command::Pair {
                listen,
                connect,
                yes,
                timeout_ms,
                security,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                pair(listen, connect, yes, timeout, &security).await
            }
            Command::Keygen { out, force } => security::keygen(&out, force).map(|v| say!("{v}")),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(failure.code, &failure.message),
    }
}
