//! Device identity and trust for the command line: which key this side uses, which peers
//! it accepts, and what it prints about them.
//!
//! Without flags, each role (phone, watch) loads or creates its identity under the state
//! directory and trusts the first peer it meets, pinning it in a known-peers file there
//! (as SSH does). `--trust` pins explicitly; `interconnect pair` compares a 6-digit code.

use interconnect::IdentityFile;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Args;
use interconnect::{
    DeviceIdentity, Fingerprint, KnownPeers, NoiseConfig, Security, SecurityError, SecurityEvent,
    SecurityEvents, TrustPolicy,
};
use interconnect_proto::Code;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{Failure, failure};

/// Where the default identities and known-peers files live, when `--state-dir` and
/// `INTERCONNECT_HOME` are not given: `$XDG_CONFIG_HOME/interconnect` or
/// `~/.config/interconnect`.
const STATE_DIR_NAME: &str = "interconnect";

/// Identity and trust flags shared by `phone`, `watch` and `pair`.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct SecurityArgs {
    /// This device's identity file (see `interconnect keygen`). Default: the role's
    /// identity under the state directory, created on first use.
    #[arg(long, value_name = "FILE", global = true)]
    identity: Option<PathBuf>,
    /// Accept only this peer fingerprint (repeatable); turns off trust on first use.
    #[arg(long = "trust", value_name = "FINGERPRINT", global = true)]
    trust: Vec<Fingerprint>,
    /// Where default identities and known peers are kept (also `INTERCONNECT_HOME`).
    #[arg(long = "state-dir", value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// No encryption, no authentication: for debugging only; the peer must use it too.
    #[arg(long = "insecure-plaintext", global = true)]
    insecure_plaintext: bool,
}

/// The role a command plays, naming its default files.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Role {
    Phone,
    Watch,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Phone => "phone",
            Role::Watch => "watch",
        }
    }
}

/// What a command runs with.
pub(crate) struct SecuritySetup {
    pub(crate) security: Security,
    pub(crate) known_peers: Option<KnownPeers>,
}

fn identity_failure(error: impl std::fmt::Display) -> Failure {
    failure(Code::STORAGE, error.to_string())
}

/// The state directory: the flag, `INTERCONNECT_HOME`, or the user's config directory.
pub(crate) fn state_dir(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    let from_env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = from_env("INTERCONNECT_HOME") {
        return Ok(PathBuf::from(home));
    }
    if let Some(config) = from_env("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(config).join(STATE_DIR_NAME));
    }
    if let Some(home) = from_env("HOME") {
        return Ok(PathBuf::from(home).join(".config").join(STATE_DIR_NAME));
    }
    Err(failure(
        Code::OTHERS,
        "no state directory: pass --state-dir, or set INTERCONNECT_HOME or HOME",
    ))
}

impl SecurityArgs {
    /// Loads (or creates) the identity and builds the trust policy; `pairing` asks for
    /// numeric comparison with peers not yet known.
    pub(crate) fn setup(&self, role: Role, pairing: bool) -> Result<SecuritySetup, Failure> {
        if self.insecure_plaintext {
            eprintln!(
                "WARNING: insecure plaintext mode: the link is neither encrypted nor authenticated"
            );
            return Ok(SecuritySetup {
                security: Security::InsecurePlaintext,
                known_peers: None,
            });
        }
        let role_dir = || state_dir(self.state_dir.as_deref()).map(|d| d.join(role.name()));
        let identity = match &self.identity {
            Some(path) => DeviceIdentity::load(path).map_err(identity_failure)?,
            None => DeviceIdentity::load_or_generate(&role_dir()?.join("identity"))
                .map_err(identity_failure)?,
        };
        eprintln!("this {} is {}", role.name(), identity.fingerprint());
        let (trust, known_peers) = if !self.trust.is_empty() {
            (TrustPolicy::Pinned(self.trust.clone()), None)
        } else {
            let known_peers = KnownPeers::new(role_dir()?.join("known_peers"));
            let known = known_peers.load().map_err(identity_failure)?;
            let trust = if pairing {
                TrustPolicy::Pairing { known }
            } else {
                TrustPolicy::FirstUse { known }
            };
            (trust, Some(known_peers))
        };
        Ok(SecuritySetup {
            security: Security::Noise(NoiseConfig::new(identity).with_trust(trust)),
            known_peers,
        })
    }
}

/// Prints security events on stderr (and, with `json`, as event lines on stdout);
/// answers pairing requests (with `confirm`: `Some(true)` accepts, `None` asks on the
/// terminal). Refusals that will not go away by retrying, and completed pairings, are
/// passed on. A phone (`phone`) that refuses a second watch says how to serve it too.
pub(crate) fn monitor(
    mut events: SecurityEvents,
    json_lines: bool,
    confirm: Option<bool>,
    phone: bool,
) -> mpsc::UnboundedReceiver<Outcome> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                SecurityEvent::Authenticated {
                    fingerprint,
                    suite,
                    code,
                } => {
                    eprintln!("peer {fingerprint} authenticated ({suite})");
                    if json_lines {
                        say!(
                            "{}",
                            json!({
                                "event": "peer_authenticated",
                                "fingerprint": fingerprint.to_string(),
                                "suite": suite.to_string(),
                            })
                        );
                    }
                    let _ = tx.send(Outcome::Authenticated {
                        fingerprint,
                        code: code.map(|c| c.to_string()),
                    });
                }
                SecurityEvent::Pinned { fingerprint } => {
                    eprintln!("peer {fingerprint} pinned: from now on only it is trusted");
                }
                SecurityEvent::PairingRequest(request) => {
                    let code = request.code();
                    let fingerprint = request.fingerprint();
                    eprintln!("pairing with {fingerprint}: code {code}");
                    say!(
                        "{}",
                        json!({ "event": "pairing", "fingerprint": fingerprint.to_string(), "code": code.to_string() })
                    );
                    let accept = match confirm {
                        Some(answer) => answer,
                        None => {
                            ask_user(&format!("Does the other device show {code}? [y/N] ")).await
                        }
                    };
                    if accept {
                        request.confirm();
                    } else {
                        request.reject();
                    }
                }
                SecurityEvent::Refused(error) => {
                    eprintln!("link refused: {error}");
                    if phone && matches!(error, SecurityError::PeerChanged { .. }) {
                        eprintln!(
                            "to serve more watches than the pinned one: --max-watches N \
                             --admit-secs S (new watches are pinned during the first S seconds)"
                        );
                    }
                    if json_lines {
                        say!(
                            "{}",
                            json!({
                                "event": "error",
                                "code": error.code().as_u16(),
                                "message": error.to_string(),
                            })
                        );
                    }
                    let _ = tx.send(if error.is_lasting() {
                        Outcome::Refused(error)
                    } else {
                        Outcome::Passing(error)
                    });
                }
                SecurityEvent::Missed { count } => {
                    eprintln!(
                        "{count} security events were dropped: they came faster than they were printed"
                    );
                    if json_lines {
                        say!(
                            "{}",
                            json!({ "event": "security_events_missed", "count": count })
                        );
                    }
                }
                other => eprintln!("security event: {other:?}"),
            }
        }
    });
    rx
}

/// What the monitor passes on.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The peer passed this side's policy.
    Authenticated {
        fingerprint: Fingerprint,
        code: Option<String>,
    },
    /// A refusal that retrying will not cure.
    Refused(SecurityError),
    /// A refusal that a new link may not repeat (or that anyone could have sent): the
    /// command keeps trying, and reports it if it times out.
    Passing(SecurityError),
}

impl From<SecurityError> for Failure {
    fn from(error: SecurityError) -> Self {
        failure(error.code(), error.to_string())
    }
}

async fn ask_user(prompt: &str) -> bool {
    eprint!("{prompt}");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).is_ok()
            && matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    })
    .await
    .unwrap_or(false)
}

/// `interconnect keygen`: a new identity file (never overwriting one without `force`).
pub(crate) fn keygen(out: &Path, force: bool) -> Result<serde_json::Value, Failure> {
    if out.exists() && !force {
        return Err(failure(
            Code::STORAGE,
            format!(
                "{} exists; pass --force to replace it (its peers will no longer recognise this device)",
                out.display()
            ),
        ));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            failure(
                Code::STORAGE,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    let identity = DeviceIdentity::generate();
    identity.save(out).map_err(identity_failure)?;
    Ok(json!({ "identity": out, "fingerprint": identity.fingerprint().to_string() }))
}
