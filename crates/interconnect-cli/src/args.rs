//! The command line: commands, flags and their checks.

use crate::*;
use clap::{Parser, Subcommand};
use security::SecurityArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "interconnect",
    version,
    about = "Watch ↔ phone messaging and files over TCP"
)]
pub(crate) struct Cli {
    /// More logs on stderr (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// A phone hub and a watch in this process over loopback TCP: opens a channel,
    /// exchanges messages, runs a request/reply, sends a file, and checks every step.
    Demo,
    /// A phone hub with one registered app; prints one JSON line per event.
    Phone {
        /// Address to listen on, e.g. 127.0.0.1:7000.
        #[arg(long)]
        listen: SocketAddr,
        /// The app's package name.
        #[arg(long)]
        package: String,
        /// The app's version.
        #[arg(long = "app-version")]
        app_version: u32,
        /// The app's signature (its signing certificate's fingerprint, as the vendor APIs call it).
        #[arg(long)]
        signature: Option<String>,
        /// Where received files go.
        #[arg(long = "files-dir")]
        files_dir: PathBuf,
        /// Free space (MiB) the disk keeps once every file in progress is stored.
        #[arg(long = "reserve-free-mib", default_value_t = 64)]
        reserve_free_mib: u64,
        /// Answer every message (and request) with the same data.
        #[arg(long)]
        echo: bool,
        /// Milliseconds the app spends on each message before it reads the next: a
        /// message is acknowledged to the watch only once the app took it, so this shows
        /// the watch's sends waiting (and what a phone that dies holds unread).
        #[arg(long = "handle-ms", default_value_t = 0)]
        handle_ms: u64,
        /// Watches served at once. Above 1, each watch gets its own connection, and
        /// every event line says which watch (`"watch"`: its device id).
        #[arg(long = "max-watches", default_value_t = 1)]
        max_watches: usize,
        /// Seconds from the start during which a new watch is trusted on first use and
        /// pinned (with --max-watches above 1; the first watch is, while none is pinned).
        #[arg(long = "admit-secs", default_value_t = 0)]
        admit_secs: u64,
        /// A store file (created if missing): the app's cursors of the watches' durable
        /// messages live there, so a restarted phone never prints one twice.
        #[arg(long, value_name = "FILE")]
        store: Option<PathBuf>,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// A watch connecting to a phone, running one command.
    Watch {
        /// The phone's address: `host:port` (`localhost:7000`, `192.168.1.5:7000`).
        #[arg(long, value_parser = host_and_port)]
        connect: String,
        /// The phone app's package name.
        #[arg(long)]
        package: String,
        /// The signature the phone app must have (1007 otherwise).
        #[arg(long)]
        signature: Option<String>,
        /// How long to wait for the connection and the command, in milliseconds.
        #[arg(long = "timeout-ms", default_value_t = 10_000, global = true)]
        timeout_ms: u64,
        /// The name this watch gives itself (at most 64 bytes): a phone serving several
        /// watches prints it beside the watch's events.
        #[arg(long)]
        name: Option<String>,
        /// A store file (created if missing) for durable messages (`send --durable`):
        /// what it holds is delivered by any later `watch` command on the same store.
        #[arg(long, value_name = "FILE", global = true)]
        store: Option<PathBuf>,
        #[command(flatten)]
        security: SecurityArgs,
        #[command(subcommand)]
        command: WatchCommand,
    },
    /// Pairs this device with a peer by numeric comparison: both sides show a 6-digit
    /// code; when they match and the user confirms on both, each pins the other.
    Pair {
        /// Pair as the phone, listening here.
        #[arg(long, required_unless_present = "connect", conflicts_with = "connect")]
        listen: Option<SocketAddr>,
        /// Pair as the watch, connecting here (`host:port`).
        #[arg(long, value_parser = host_and_port)]
        connect: Option<String>,
        /// Confirm without asking, for scripts. This pins the peer before anyone
        /// compared the codes: compare the printed codes afterwards, and if they differ
        /// remove the pin from `known_peers` (someone sat between the devices).
        #[arg(long)]
        yes: bool,
        /// How long to wait for the peer and the user, in milliseconds.
        #[arg(long = "timeout-ms", default_value_t = 120_000)]
        timeout_ms: u64,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Creates a device identity file (owner-only permissions) and prints its fingerprint.
    Keygen {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum WatchCommand {
    /// Peer device status (0/1) and the channel's ready state (1/2).
    Status,
    /// The phone app's version, or -1 when it is not installed.
    Version,
    /// The vendor API's diagnosis: 0, 204, 1001 or 1000 (with the precise code).
    Diagnosis,
    /// Sends a JSON message and waits for the acknowledgement. With `--durable` (and
    /// `--store`): commits it, prints its id, and waits for its delivery until the
    /// timeout, exiting 0 either way (a later command on the store delivers the rest);
    /// `-` commits each line of stdin, one JSON message per line.
    Send {
        /// The message, as JSON (`-` with `--durable`: one per line of stdin).
        json: String,
        /// Kept in the store until the phone's app took it, across restarts.
        #[arg(long)]
        durable: bool,
    },
    /// What the store's outbox holds: the last id given, and each message not yet
    /// delivered.
    Outstanding,
    /// Sends a JSON request and prints the reply.
    Request {
        /// The request, as JSON.
        json: String,
    },
    /// Sends a file; survives link drops within the timeout (it resumes).
    SendFile {
        /// The file.
        path: PathBuf,
        /// The app's metadata about the file, as JSON: the phone gets it with the offer.
        #[arg(long, conflicts_with = "durable")]
        meta: Option<String>,
        /// Kept in the store (`--store`) until the phone stored it: commits, prints its
        /// id, and waits until the timeout; any later command on the store resumes it.
        #[arg(long)]
        durable: bool,
    },
    /// Sets a state key to a JSON value (`--remove`: removes it) and waits until the
    /// phone's app took it (the phone mirrors the watch's state; `phone` prints a
    /// `state` line).
    State {
        /// The key.
        key: String,
        /// The value, as JSON.
        #[arg(required_unless_present = "remove")]
        json: Option<String>,
        /// Remove the key instead.
        #[arg(long, conflicts_with = "json")]
        remove: bool,
    },
    /// Prints every event as a JSON line until the channel closes or Ctrl-C.
    Listen,
}

/// A `host:port` (the host a name or an address, `[v6]` in brackets), checked before
/// anything is looked up.
pub(crate) fn host_and_port(value: &str) -> Result<String, String> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_string())
        }
        _ => Err(format!("`{value}` is not host:port (e.g. localhost:7000)")),
    }
}
