//! A restart of either end resumes the transfer from the receiver's partial file.

use super::*;
use std::sync::Arc;
use transport_mock::Direction;

/// A watch and a phone hub with the channel open, and what a restart of the hub needs.
struct Ends {
    send_dir: tempfile::TempDir,
    recv_dir: tempfile::TempDir,
    network: MockNetwork,
    /// The hub's device key, which a restarted hub keeps (the watch pinned it).
    hub_security: Security,
    hub: Hub,
    /// Alive as long as the test.
    _watch: Interconnect,
    app: Connection,
    conn: Connection,
}

async fn ends() -> Ends {
    let send_dir = tempfile::tempdir().unwrap();
    let recv_dir = tempfile::tempdir().unwrap();
    let network = MockNetwork::new(mock_faults());
    let (dialer, listener) = network.endpoints();
    let hub_config = config(2, Some(recv_dir.path()));
    let hub_security = hub_config.session.security.clone();
    let hub = Hub::new(listener, hub_config);
    let watch = Interconnect::new(dialer, config(1, Some(send_dir.path())));
    let app = hub.register(PKG, 1, None).await.unwrap();
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
    Ends {
        send_dir,
        recv_dir,
        network,
        hub_security,
        hub,
        _watch: watch,
        app,
        conn,
    }
}

/// Sends a file, kills the receiving hub half-way and starts a new one on the same folder;
/// `damage` may alter the partial file in between. Returns how the transfer ended, the
/// offset the new receiver resumed at, the file (if stored) and the receive folder.
async fn restart_receiver_mid_file(
    damage: impl FnOnce(&Path),
) -> (
    Result<(), Error>,
    Option<u64>,
    Result<Vec<u8>, Code>,
    Vec<u8>,
    tempfile::TempDir,
) {
    let e = ends().await;
    let (network, hub, app, conn) = (e.network, e.hub, e.app, e.conn);

    let len = 2 << 20;
    let data = content(len, 7);
    let path = write_file(e.send_dir.path(), "resume.bin", &data);
    let transfer = conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    {
        while let Some(p) = progress.next().await {
            if p.bytes_done >= len as u64 / 2 {
                break;
            }
        }
    }
    // The phone process dies mid-transfer: the link goes first, so no goodbye reaches
    // the watch...
    network.set_reachable(false);
    network.cut();
    hub.shutdown().await;
    drop(app);
    network.set_reachable(true);
    let partials = partial_files(e.recv_dir.path());
    assert_eq!(partials.len(), 1, "the partial file survives");
    damage(&partials[0]);

    // ...and a new one starts on the same folder, with the same device key (the watch
    // pinned it on first use).
    let (_, listener) = network.endpoints();
    let mut restarted = config(3, Some(e.recv_dir.path()));
    restarted.session.security = e.hub_security;
    let hub = Hub::new(listener, restarted);
    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut events = app.events().unwrap();
    let sent = transfer.await;
    let mut resumed_at = None;
    let stored = loop {
        match next_event(&mut events).await {
            ConnectionEvent::FileIncoming { offset, .. } => resumed_at = Some(offset),
            ConnectionEvent::File { path, .. } => break Ok(std::fs::read(path).unwrap()),
            ConnectionEvent::Error { code, .. } => break Err(code),
            _ => {}
        }
    };
    (sent, resumed_at, stored, data, e.recv_dir)
}

#[tokio::test(start_paused = true)]
async fn a_restarted_receiver_resumes_from_its_partial_file() {
    let (sent, resumed_at, stored, data, recv_dir) = restart_receiver_mid_file(|_| {}).await;
    sent.unwrap();
    assert!(stored.unwrap() == data, "stored identical");
    let resumed_at = resumed_at.expect("the new receiver announced the file");
    assert!(
        resumed_at >= data.len() as u64 / 2,
        "resumed at {resumed_at}, not from zero"
    );
    assert!(partial_files(recv_dir.path()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_damaged_partial_file_fails_the_digest_and_nothing_is_stored() {
    let (sent, resumed_at, stored, _, recv_dir) = restart_receiver_mid_file(|partial| {
        let mut bytes = std::fs::read(partial).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(partial, bytes).unwrap();
    })
    .await;
    assert!(resumed_at.is_some_and(|at| at > 0), "it did resume");
    assert_eq!(stored, Err(Code::INTEGRITY));
    let error = sent.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transfer {
                code: Code::INTEGRITY,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(partial_files(recv_dir.path()).is_empty(), "partial removed");
    assert!(stored_files(recv_dir.path()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restarted_sender_resumes_the_same_file_from_the_receivers_partial() {
    let send_dir = tempfile::tempdir().unwrap();
    let recv_dir = tempfile::tempdir().unwrap();
    let network = MockNetwork::new(mock_faults());
    let (dialer, listener) = network.endpoints();
    let hub = Hub::new(listener, config(2, Some(recv_dir.path())));
    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut events = app.events().unwrap();
    let watch_config = config(1, Some(send_dir.path()));
    let watch_security = watch_config.session.security.clone();
    let watch = Interconnect::new(dialer, watch_config);
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());

    let len = 2 << 20;
    let data = content(len, 8);
    let path = write_file(send_dir.path(), "again.bin", &data);
    let transfer = conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    {
        while let Some(p) = progress.next().await {
            if p.bytes_done >= len as u64 / 2 {
                break;
            }
        }
    }
    // The watch process dies mid-transfer...
    network.set_reachable(false);
    network.cut();
    drop((transfer, conn));
    watch.shutdown().await;
    network.set_reachable(true);

    // ...and a new one, with the same device key, sends the same file again: a new
    // transfer, which the phone resumes from what it holds.
    let (dialer, _) = network.endpoints();
    let mut restarted = config(1, Some(send_dir.path()));
    restarted.session.security = watch_security;
    // A new process: its session (resume token) is new, only its device key is kept.
    restarted.seed = Some(77);
    let watch = Interconnect::new(dialer, restarted);
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
    conn.send_file(&path).await.unwrap();
    let mut resumed_at = None;
    loop {
        match next_event(&mut events).await {
            ConnectionEvent::FileIncoming { offset, .. } => resumed_at = Some(offset),
            ConnectionEvent::File { path, .. } => {
                assert!(std::fs::read(path).unwrap() == data, "stored identical");
                break;
            }
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    }
    let resumed_at = resumed_at.expect("the phone announced the file");
    assert!(
        resumed_at >= len as u64 / 2,
        "resumed at {resumed_at}, not from zero"
    );
    assert!(partial_files(recv_dir.path()).is_empty());
    assert_eq!(stored_files(recv_dir.path()), ["again.bin"]);
}

/// A phone that stored a file and died before the watch heard: the same watch process
/// offers the same transfer to the restarted phone, which answers that it is stored
/// already. The watch's send succeeds and the file is stored once.
#[tokio::test(start_paused = true)]
async fn a_file_stored_before_the_phone_died_is_not_stored_again() {
    let e = ends().await;
    let (network, hub, app, conn) = (e.network, e.hub, e.app, e.conn);
    let mut events = app.events().unwrap();

    // Smaller than the file window: once accepted, it is sent whole without an answer.
    let data = content(100_000, 9);
    let path = write_file(e.send_dir.path(), "once.bin", &data);
    let transfer = conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    while let Some(p) = progress.next().await {
        if p.bytes_done > 0 {
            break;
        }
    }
    // From now on nothing the phone says reaches the watch: it never hears the file
    // was stored.
    network.intercept(Some(Arc::new(|direction, _, frame| match direction {
        Direction::ToWatch => Vec::new(),
        Direction::ToPhone => vec![frame],
    })));
    loop {
        match next_event(&mut events).await {
            ConnectionEvent::File { path, .. } => {
                assert!(std::fs::read(path).unwrap() == data, "stored identical");
                break;
            }
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    }
    // The phone process dies, and a new one starts on the same folder.
    network.set_reachable(false);
    network.cut();
    hub.shutdown().await;
    drop((app, events));
    network.intercept(None);
    network.set_reachable(true);
    let (_, listener) = network.endpoints();
    let mut restarted = config(3, Some(e.recv_dir.path()));
    restarted.session.security = e.hub_security;
    let hub = Hub::new(listener, restarted);
    let _app = hub.register(PKG, 1, None).await.unwrap();

    transfer.await.expect("the watch hears the file is stored");
    assert_eq!(stored_files(e.recv_dir.path()), ["once.bin"], "stored once");
}
