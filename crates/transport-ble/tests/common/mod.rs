//! Virtual controllers (`fixtures/controllers.py`, Bumble) for the tests that run a real
//! host stack: each test starts its own, on free loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use interconnect::{Link, Transport, TransportError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

/// The Python that has Bumble: `$BUMBLE_PYTHON`, else the venv `.ci/run` makes.
pub(crate) fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("BUMBLE_PYTHON") {
        return path.into();
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bumble-venv/bin/python");
    assert!(
        venv.exists(),
        "no Bumble: run .ci/run, or make a venv with `pip install bumble==0.0.236 blake3==1.0.8` and set BUMBLE_PYTHON"
    );
    venv
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A running `controllers.py`; killed when dropped (and it exits by itself when its
/// stdin closes, should this process die first).
pub(crate) struct Controllers {
    _child: tokio::process::Child,
    stdin: Mutex<ChildStdin>,
    stdout: Mutex<BufReader<ChildStdout>>,
    ports: Vec<u16>,
}

impl Controllers {
    pub(crate) async fn start(count: usize) -> Arc<Controllers> {
        let mut command = Command::new(python());
        command
            .arg(fixture("controllers.py"))
            .arg("--controllers")
            .arg(count.to_string());
        if std::env::var_os("CONTROLLERS_VERBOSE").is_some() {
            command.arg("--verbose");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start controllers.py");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .await
            .expect("controllers.py ready");
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("controllers.py said {line:?}: {e}"));
        let ports = ready["hci"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p.as_u64().expect("port") as u16)
            .collect();
        Arc::new(Controllers {
            _child: child,
            stdin: Mutex::new(stdin),
            stdout: Mutex::new(stdout),
            ports,
        })
    }

    /// Where controller `index` listens.
    pub(crate) fn hci(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index]))
    }

    /// Cuts the radio for `seconds`.
    pub(crate) async fn cut(&self, seconds: f64) {
        let mut stdin = self.stdin.lock().await;
        stdin
            .write_all(format!("cut {seconds}\n").as_bytes())
            .await
            .expect("command");
        stdin.flush().await.expect("flush");
        let mut line = String::new();
        self.stdout
            .lock()
            .await
            .read_line(&mut line)
            .await
            .expect("answer");
        assert!(line.contains("\"cut\""), "controllers.py said {line:?}");
    }
}

/// A transport that keeps its controllers running while it lives.
pub(crate) struct OnControllers<T> {
    pub(crate) inner: T,
    pub(crate) controllers: Arc<Controllers>,
}

#[async_trait]
impl<T: Transport> Transport for OnControllers<T> {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        self.inner.next_link().await
    }

    fn accepts_while_linked(&self) -> bool {
        self.inner.accepts_while_linked()
    }

    fn is_reliable(&self) -> bool {
        self.inner.is_reliable()
    }
}

/// The example program, which `cargo test` builds beside the tests.
pub(crate) fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join("trouble-watch");
    assert!(path.exists(), "{} is built by cargo test", path.display());
    path
}

/// A child process, killed when dropped (a failing test leaves nothing running).
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A watch process; its stdout lines go to `lines`.
pub(crate) fn watch_process(
    hci: SocketAddr,
    home: &Path,
    package: &str,
    extra: &[&str],
    lines: mpsc::Sender<serde_json::Value>,
) -> Killed {
    let mut child = std::process::Command::new(example())
        .arg("--hci")
        .arg(hci.to_string())
        .arg("--home")
        .arg(home)
        .args(["--package", package])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the watch starts");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(value) = serde_json::from_str(&line)
                && lines.send(value).is_err()
            {
                return;
            }
        }
    });
    Killed(child)
}

/// What the phone of [`trouble_pair`] carries the session on: the watch always offers
/// both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Carry {
    Gatt,
    Coc,
}

/// A trouble-host watch on controller 0 and phone on controller 1, each with `mtu` as
/// its largest ATT MTU for packets; the watch offers L2CAP, the phone uses it or GATT.
pub(crate) async fn trouble_pair(
    controllers: &Controllers,
    mtu: u16,
    carry: Carry,
) -> (
    transport_ble::trouble::Trouble,
    transport_ble::trouble::Trouble,
) {
    use transport_ble::BleConfig;
    use transport_ble::trouble::{HostConfig, Trouble};
    let host = |index| {
        let mut host = HostConfig::new(controllers.hci(index));
        host.max_att_mtu = mtu;
        host
    };
    let watch = Trouble::peripheral(host(0), BleConfig::default())
        .await
        .expect("watch host");
    let mut phone_host = host(1);
    phone_host.coc = carry == Carry::Coc;
    let phone = Trouble::central(phone_host, BleConfig::default())
        .await
        .expect("phone host");
    (watch, phone)
}

/// A trouble-host endpoint that records what each of its links was carried on, so a
/// test sees that L2CAP was used rather than the GATT fallback.
pub(crate) struct Recorded {
    pub(crate) inner: transport_ble::trouble::Trouble,
    /// `true` for each link over L2CAP, `false` for each over GATT.
    pub(crate) carried: Arc<std::sync::Mutex<Vec<bool>>>,
}

impl Recorded {
    pub(crate) fn new(inner: transport_ble::trouble::Trouble) -> Self {
        Recorded {
            inner,
            carried: Arc::default(),
        }
    }

    /// What the links so far were carried on.
    pub(crate) fn log(&self) -> Arc<std::sync::Mutex<Vec<bool>>> {
        self.carried.clone()
    }
}

#[async_trait]
impl Transport for Recorded {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let carrier = self.inner.next_carrier().await?;
        self.carried.lock().unwrap().push(carrier.is_coc());
        Ok(carrier.into_link(&transport_ble::BleConfig::default()))
    }

    fn accepts_while_linked(&self) -> bool {
        self.inner.accepts_while_linked()
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

/// Asserts every link in `log` was carried as `carry` says (and there was one).
pub(crate) fn assert_carried(log: &std::sync::Mutex<Vec<bool>>, carry: Carry) {
    let log = log.lock().unwrap();
    assert!(!log.is_empty(), "no link");
    assert!(
        log.iter().all(|coc| *coc == (carry == Carry::Coc)),
        "links carried over L2CAP (true) or GATT: {log:?}, expected {carry:?}"
    );
}

/// A phone whose every link must come as `carry` says: one that does not panics, and the
/// case fails.
pub(crate) struct Checked {
    inner: transport_ble::trouble::Trouble,
    carry: Carry,
}

#[async_trait]
impl Transport for Checked {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let carrier = self.inner.next_carrier().await?;
        assert_eq!(
            carrier.is_coc(),
            self.carry == Carry::Coc,
            "a link not over {:?}",
            self.carry
        );
        Ok(carrier.into_link(&transport_ble::BleConfig::default()))
    }

    fn accepts_while_linked(&self) -> bool {
        self.inner.accepts_while_linked()
    }

    fn is_reliable(&self) -> bool {
        true
    }
}

/// The conformance suite's pair on the real stack: watch and phone on two controllers,
/// the phone's links checked to come as `carry` says.
pub(crate) async fn stack_pair(carry: Carry) -> (Box<dyn Transport>, Box<dyn Transport>) {
    let controllers = Controllers::start(2).await;
    let (watch, phone) = trouble_pair(&controllers, 517, carry).await;
    (
        Box::new(OnControllers {
            inner: watch,
            controllers: controllers.clone(),
        }),
        Box::new(OnControllers {
            inner: Checked {
                inner: phone,
                carry,
            },
            controllers,
        }),
    )
}

/// Several watches, each its own controller, the phone one more, all on one radio; the
/// phone's central keeps a connection to each, carried as `carry` says.
pub(crate) async fn stack_fleet(
    watches: usize,
    carry: Carry,
) -> (Vec<Box<dyn Transport>>, Box<dyn Transport>) {
    use transport_ble::BleConfig;
    use transport_ble::trouble::{HostConfig, Trouble};
    let controllers = Controllers::start(watches + 1).await;
    let mut peripherals: Vec<Box<dyn Transport>> = Vec::new();
    for i in 0..watches {
        let watch = Trouble::peripheral(HostConfig::new(controllers.hci(i)), BleConfig::default())
            .await
            .expect("watch host");
        peripherals.push(Box::new(OnControllers {
            inner: watch,
            controllers: controllers.clone(),
        }));
    }
    let mut host = HostConfig::new(controllers.hci(watches));
    host.coc = carry == Carry::Coc;
    let phone = Trouble::central_of_several(host, BleConfig::default(), watches)
        .await
        .expect("phone host");
    (
        peripherals,
        Box::new(OnControllers {
            inner: Checked {
                inner: phone,
                carry,
            },
            controllers,
        }),
    )
}
