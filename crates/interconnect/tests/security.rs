//! Threat tests: the mock link acts as the attacker (it reads, changes, drops, records,
//! replays and forges frames) between a watch and a phone, on tokio's paused clock.

mod common;
use common::refusal;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use interconnect::sans_io::*;
use interconnect::*;
use interconnect_proto::*;
use transport_mock::{Direction, Faults, MockNetwork};

const PKG: &str = "com.example.secure";
const MAX: usize = DEFAULT_MAX_FRAME_LEN;

fn identity(key: u8) -> DeviceIdentity {
    DeviceIdentity::from_private_key([key; 32])
}

fn noise(key: u8) -> NoiseConfig {
    NoiseConfig::new(identity(key))
}

struct Setup {
    network: MockNetwork,
    watch: Interconnect,
    hub: Hub,
    watch_security: SecurityEvents,
    hub_security: SecurityEvents,
}

fn config(id: u8, security: NoiseConfig) -> Config {
    let mut config = Config::in_memory(DeviceId([id; 16]));
    config.seed = Some(u64::from(id));
    config.session.security = Security::Noise(security);
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    config
}

fn setup_with(watch: NoiseConfig, phone: NoiseConfig) -> Setup {
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let hub = Hub::new(listener, config(2, phone));
    let watch = Interconnect::new(dialer, config(1, watch));
    let watch_security = watch.security_events().expect("first take");
    let hub_security = hub.security_events().expect("first take");
    assert!(watch.security_events().is_none(), "taken once");
    Setup {
        network,
        watch,
        hub,
        watch_security,
        hub_security,
    }
}

fn setup() -> Setup {
    setup_with(noise(1), noise(2))
}

async fn open(s: &Setup) -> (Connection, Connection) {
    let app = s.hub.register(PKG, 1, None).await.unwrap();
    let conn = s.watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
    (conn, app)
}

/// Messages the app receives until `count` arrived, then any that follow within a
/// (virtual) minute: what a duplicate would add.
async fn messages(app: &mut Events, count: usize) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        let wait = if got.len() < count { 600 } else { 60 };
        match tokio::time::timeout(Duration::from_secs(wait), app.next()).await {
            Ok(Some(ConnectionEvent::Message(m))) => got.push(m.decode().unwrap()),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the app's events ended"),
            Err(_) if got.len() >= count => return got,
            Err(_) => panic!("only {} of {count} messages arrived: {got:?}", got.len()),
        }
    }
}

fn sealed(frame: &Bytes) -> Option<Sealed> {
    match Frame::decode(frame.clone(), MAX) {
        Ok(Frame::Sealed(sealed)) => Some(sealed),
        _ => None,
    }
}

fn encode(frame: Frame) -> Bytes {
    frame.to_bytes(MAX).unwrap()
}

#[tokio::test(start_paused = true)]
async fn both_devices_learn_who_the_other_is() {
    let mut s = setup();
    let (_conn, _app) = open(&s).await;
    for (events, peer) in [(&mut s.watch_security, 2), (&mut s.hub_security, 1)] {
        let mut pinned = None;
        loop {
            match events.next().await.unwrap() {
                SecurityEvent::Pinned { fingerprint } => pinned = Some(fingerprint),
                SecurityEvent::Authenticated {
                    fingerprint, suite, ..
                } => {
                    assert_eq!(fingerprint, identity(peer).fingerprint());
                    assert_eq!(pinned, Some(fingerprint), "first use pins the peer");
                    assert_eq!(suite, CipherSuite::preferred());
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_flipped_bit_in_a_sealed_frame_drops_the_link_and_loses_or_repeats_nothing() {
    let mut s = setup();
    let (conn, app) = open(&s).await;
    let mut app_events = app.events().unwrap();
    // Every 4th sealed frame, either way, gets one bit flipped (at a different place each
    // time) and a correct CRC, so only the AEAD tag can notice; 12 times in all.
    let seen = Arc::new(AtomicU64::new(0));
    let flipped = Arc::new(AtomicU64::new(0));
    s.network.intercept(Some(Arc::new({
        let flipped = flipped.clone();
        move |_, _, frame| {
            let Some(mut sealed) = sealed(&frame) else {
                return vec![frame];
            };
            let n = seen.fetch_add(1, Ordering::Relaxed);
            if n % 4 != 3 || flipped.load(Ordering::Relaxed) >= 12 {
                return vec![frame];
            }
            flipped.fetch_add(1, Ordering::Relaxed);
            let mut ciphertext = sealed.ciphertext.to_vec();
            let bit = (n as usize * 7919) % (ciphertext.len() * 8);
            ciphertext[bit / 8] ^= 1 << (bit % 8);
            sealed.ciphertext = Bytes::from(ciphertext);
            vec![encode(Frame::Sealed(sealed))]
        }
    })));
    let sends: Vec<_> = (0..100u32).map(|i| tokio::spawn(conn.send(&i))).collect();
    assert_eq!(
        messages(&mut app_events, 100).await,
        (0..100).collect::<Vec<_>>()
    );
    for send in sends {
        send.await.unwrap().expect("every message is acknowledged");
    }
    assert_eq!(flipped.load(Ordering::Relaxed), 12);
    assert!(
        s.network.links_made() > 1,
        "the link was dropped and made again"
    );
    let rejected = tokio::select! {
        e = refusal(&mut s.hub_security) => e,
        e = refusal(&mut s.watch_security) => e,
    };
    assert_eq!(rejected, SecurityError::BadSealedFrame);
    // A broken link, not a decision of the peer: 4000, never final.
    assert_eq!(rejected.code(), Code::PROTOCOL_ERROR);
    assert!(!rejected.is_lasting());
}

#[tokio::test(start_paused = true)]
async fn frames_replayed_within_a_link_or_from_an_earlier_one_are_rejected() {
    let mut s = setup();
    let (conn, app) = open(&s).await;
    let mut app_events = app.events().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let replayed = Arc::new(AtomicBool::new(false));
    s.network.intercept(Some(Arc::new({
        let recorded = recorded.clone();
        let replayed = replayed.clone();
        move |direction, link, frame| {
            if direction != Direction::ToPhone || sealed(&frame).is_none() {
                return vec![frame];
            }
            if link == 1 {
                // Record, and replay at once: the copy arrives after the original.
                recorded.lock().unwrap().push(frame.clone());
                return vec![frame.clone(), frame];
            }
            if replayed.swap(true, Ordering::Relaxed) {
                return vec![frame];
            }
            // The first sealed frame of a later link: the earlier link's frames go first.
            let mut frames = recorded.lock().unwrap().clone();
            frames.push(frame);
            frames
        }
    })));
    let sends: Vec<_> = (0..3u32).map(|i| conn.send(&i)).collect();
    assert_eq!(messages(&mut app_events, 3).await, vec![0, 1, 2]);
    for send in sends {
        send.await.unwrap();
    }
    assert_eq!(
        s.network.links_made(),
        1,
        "a replayed frame is dropped, not fatal"
    );
    assert!(!recorded.lock().unwrap().is_empty());

    s.network.cut();
    let sent = conn.send(&3u32);
    assert_eq!(messages(&mut app_events, 1).await, vec![3]);
    sent.await.unwrap();
    assert!(replayed.load(Ordering::Relaxed));
    assert_eq!(
        refusal(&mut s.hub_security).await,
        SecurityError::BadSealedFrame,
        "frames of another session fail authentication"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_with_an_untrusted_key_is_refused_and_nothing_reaches_the_app() {
    let stranger = identity(9).fingerprint();
    let mut s = setup_with(
        noise(1),
        noise(2).with_trust(TrustPolicy::Pinned(vec![stranger])),
    );
    let app = s.hub.register(PKG, 1, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let conn = s.watch.instance(PKG, None);
    assert_eq!(
        refusal(&mut s.hub_security).await,
        SecurityError::UntrustedPeer {
            fingerprint: identity(1).fingerprint()
        }
    );
    let refused = refusal(&mut s.watch_security).await;
    assert!(
        matches!(&refused, SecurityError::RefusedByPeer { code, .. } if *code == Code::UNTRUSTED_PEER),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("not trusted"), "{refused}");
    assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
    assert!(
        tokio::time::timeout(Duration::from_secs(60), app_events.next())
            .await
            .is_err(),
        "no channel opens"
    );
    assert_eq!(s.hub.peer_device_status(), PeerDeviceStatus::Disconnected);
}

#[tokio::test(start_paused = true)]
async fn a_phone_with_an_untrusted_key_is_refused_before_it_learns_the_watch() {
    let mut s = setup_with(
        noise(1).with_trust(TrustPolicy::Pinned(vec![identity(9).fingerprint()])),
        noise(2),
    );
    let conn = s.watch.instance(PKG, None);
    assert_eq!(
        refusal(&mut s.watch_security).await,
        SecurityError::UntrustedPeer {
            fingerprint: identity(2).fingerprint()
        }
    );
    // The watch stopped before step 3, which carries its identity.
    assert!(matches!(
        refusal(&mut s.hub_security).await,
        SecurityError::RefusedByPeer { .. }
    ));
    assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn trust_on_first_use_refuses_a_different_phone_later() {
    let mut s = setup();
    let (conn, app) = open(&s).await;
    drop(app);
    s.hub.shutdown().await;
    let (_, listener) = s.network.endpoints();
    let impostor = Hub::new(listener, config(3, noise(3)));
    let _app = impostor.register(PKG, 1, None).await.unwrap();
    s.network.cut();
    assert_eq!(
        refusal(&mut s.watch_security).await,
        SecurityError::PeerChanged {
            pinned: identity(2).fingerprint(),
            fingerprint: identity(3).fingerprint(),
        }
    );
    assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn plaintext_injected_after_the_handshake_changes_nothing() {
    let s = setup();
    let (conn, app) = open(&s).await;
    let mut app_events = app.events().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    s.network
        .intercept(Some(Arc::new(move |direction, _, frame| {
            if direction == Direction::ToPhone
                && sealed(&frame).is_some()
                && armed.swap(false, Ordering::Relaxed)
            {
                let forged = Frame::Data(Data {
                    channel: ChannelId(1),
                    seq: 1,
                    content_type: ContentType::Json,
                    exchange: Exchange::OneWay,
                    payload: Bytes::from_static(b"666"),
                });
                return vec![encode(forged), frame];
            }
            vec![frame]
        })));
    let sent = conn.send(&7u32);
    assert_eq!(
        messages(&mut app_events, 1).await,
        vec![7],
        "666 never arrives"
    );
    sent.await.unwrap();
    assert_eq!(
        s.network.links_made(),
        1,
        "the forged frame was dropped, not the link"
    );
}

/// Rewrites the watch's step-1 offer on its way to the phone.
fn rewrite_offer(network: &MockNetwork, change: impl Fn(&mut Handshake) + Send + Sync + 'static) {
    network.intercept(Some(Arc::new(move |direction, _, frame| {
        if direction == Direction::ToPhone
            && let Ok(Frame::Handshake(mut offer)) = Frame::decode(frame.clone(), MAX)
            && offer.step == 1
        {
            change(&mut offer);
            return vec![encode(Frame::Handshake(offer))];
        }
        vec![frame]
    })));
}

#[tokio::test(start_paused = true)]
async fn a_rewritten_cipher_suite_offer_fails_the_handshake() {
    let suites = [CipherSuite::AesGcm, CipherSuite::ChaChaPoly];
    let mut s = setup_with(noise(1).with_suites(&suites), noise(2).with_suites(&suites));
    // The attacker makes the phone believe the watch chose the other suite (both allowed).
    rewrite_offer(&s.network, |offer| {
        offer.suite = CipherSuite::ChaChaPoly.id();
        offer.offered = CipherSuite::ChaChaPoly.id();
    });
    let _app = s.hub.register(PKG, 1, None).await.unwrap();
    let conn = s.watch.instance(PKG, None);
    let refused = refusal(&mut s.watch_security).await;
    assert!(
        matches!(refused, SecurityError::Handshake(_)),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("tampered"), "{refused}");
    assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());

    // Without the attacker the same devices agree on the watch's choice. (The phone's
    // events are read as they come: a stream left unread drops the newest.)
    let mut hub_security = s.hub_security;
    let agreed = tokio::spawn(async move {
        loop {
            if let SecurityEvent::Authenticated { suite, .. } = hub_security.next().await? {
                return Some(suite);
            }
        }
    });
    s.network.intercept(None);
    assert!(conn.diagnosis(Some(Duration::from_secs(30))).await.is_ok());
    assert_eq!(agreed.await.unwrap(), Some(CipherSuite::AesGcm));
}

#[tokio::test(start_paused = true)]
async fn a_weaker_rekey_interval_or_a_stripped_handshake_is_refused() {
    let mut s = setup();
    rewrite_offer(&s.network, |offer| offer.rekey_interval = 1);
    let conn = s.watch.instance(PKG, None);
    let refused = refusal(&mut s.hub_security).await;
    assert!(
        refused.to_string().contains("rekey interval 1"),
        "{refused}"
    );

    // Strip encryption: the attacker swaps the offer for a plaintext Hello.
    s.network.intercept(Some(Arc::new(|direction, _, frame| {
        match Frame::decode(frame.clone(), MAX) {
            Ok(Frame::Handshake(_)) if direction == Direction::ToPhone => {
                vec![encode(Frame::Hello(Hello {
                    min_version: 1,
                    max_version: 1,
                    role: Role::Watch,
                    device_id: DeviceId([1; 16]),
                    max_frame_len: MAX as u32,
                    capabilities: Capabilities::ALL,
                    resume_token: 1,
                }))]
            }
            _ => vec![frame],
        }
    })));
    loop {
        if refusal(&mut s.hub_security).await == SecurityError::Plaintext("hello") {
            break;
        }
    }
    assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn devices_with_no_suite_in_common_are_refused_with_a_clear_error() {
    let mut s = setup_with(
        noise(1).with_suites(&[CipherSuite::AesGcm]),
        noise(2).with_suites(&[CipherSuite::ChaChaPoly]),
    );
    let _conn = s.watch.instance(PKG, None);
    let refused = refusal(&mut s.hub_security).await;
    assert!(
        matches!(refused, SecurityError::SuiteNotAllowed { .. }),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "cipher suite AES-256-GCM is not allowed here (allowed: ChaCha20-Poly1305)"
    );
    let refused = refusal(&mut s.watch_security).await;
    assert!(
        matches!(&refused, SecurityError::RefusedByPeer { code, .. } if *code == Code::SECURITY),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_times_out_and_frees_the_phone_for_the_real_watch() {
    let network = MockNetwork::new(Faults::default());
    let (mut attacker, listener) = network.endpoints();
    let hub = Hub::new(listener, config(2, noise(2)));
    let _app = hub.register(PKG, 1, None).await.unwrap();
    // The attacker opens a link, sends a valid step 1, then nothing.
    let mut link = attacker.next_link().await.unwrap();
    let mut session = Session::new(
        SessionConfig::new(Role::Watch, DeviceId([6; 16]), 6, Security::Noise(noise(6))),
        [0x60; 32],
    );
    let start = tokio::time::Instant::now();
    session.link_up(interconnect::sans_io::Instant::ZERO, MAX);
    let step1 = session
        .poll_transmit(interconnect::sans_io::Instant::ZERO)
        .expect("step 1");
    link.sender.send(step1).await.unwrap();
    let step2 = link
        .receiver
        .recv()
        .await
        .unwrap()
        .expect("the phone answers");
    assert!(matches!(
        Frame::decode(step2.freeze(), MAX),
        Ok(Frame::Handshake(Handshake { step: 2, .. }))
    ));
    while let Ok(Some(_)) = link.receiver.recv().await {}
    let waited = start.elapsed();
    // The phone waits for step 3 no longer than a handshake step may take.
    let limit = SessionConfig::new(
        Role::Phone,
        DeviceId([2; 16]),
        0,
        Security::InsecurePlaintext,
    )
    .handshake_step_timeout;
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(1),
        "dropped after {waited:?}"
    );

    let (dialer, _) = network.endpoints();
    let watch = Interconnect::new(dialer, config(1, noise(1)));
    let conn = watch.instance(PKG, None);
    assert!(conn.diagnosis(None).await.is_ok());
}

async fn pairing_request(events: &mut SecurityEvents) -> PairingRequest {
    loop {
        match events.next().await.expect("events") {
            SecurityEvent::PairingRequest(request) => return request,
            SecurityEvent::Refused(e) => panic!("refused: {e}"),
            _ => {}
        }
    }
}

/// Both devices pair by numeric comparison; neither knows the other yet.
fn pairing_setup() -> Setup {
    let pairing = || TrustPolicy::Pairing { known: Vec::new() };
    setup_with(
        noise(1).with_trust(pairing()),
        noise(2).with_trust(pairing()),
    )
}

#[tokio::test(start_paused = true)]
async fn pairing_shows_the_same_code_on_both_sides_and_opens_only_when_both_confirm() {
    let mut s = pairing_setup();
    let conn = s.watch.instance(PKG, None);
    let _app = s.hub.register(PKG, 1, None).await.unwrap();
    let on_watch = pairing_request(&mut s.watch_security).await;
    let on_phone = pairing_request(&mut s.hub_security).await;
    assert_eq!(on_watch.code(), on_phone.code());
    assert_eq!(on_watch.code().to_string().len(), 6);
    assert_eq!(on_watch.fingerprint(), identity(2).fingerprint());
    assert_eq!(on_phone.fingerprint(), identity(1).fingerprint());
    // Only the watch confirms so far: nothing opens.
    on_watch.confirm();
    assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
    on_phone.confirm();
    assert!(conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_rejected_pairing_refuses_the_peer() {
    let mut s = pairing_setup();
    let conn = s.watch.instance(PKG, None);
    pairing_request(&mut s.hub_security).await.reject();
    assert_eq!(
        refusal(&mut s.hub_security).await,
        SecurityError::PairingRejected {
            fingerprint: identity(1).fingerprint()
        }
    );
    let refused = loop {
        let refused = refusal(&mut s.watch_security).await;
        if matches!(refused, SecurityError::RefusedByPeer { .. }) {
            break refused;
        }
    };
    assert_eq!(refused.code(), Code::UNTRUSTED_PEER);
    assert!(!conn.diagnosis(Some(Duration::from_secs(1))).await.is_ok());
}

/// How a phone is refused by a watch whose known-peers file is `file`, set only through
/// `Config::known_peers`.
async fn refusal_with_known_peers(file: &std::path::Path) -> SecurityError {
    let mut watch_config = config(1, noise(1));
    watch_config.known_peers = Some(KnownPeers::new(file));
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let _hub = Hub::new(listener, config(2, noise(2)));
    let watch = Interconnect::new(dialer, watch_config);
    let mut events = watch.security_events().unwrap();
    refusal(&mut events).await
}

#[tokio::test(start_paused = true)]
async fn the_known_peers_file_is_enforced_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_peers");
    KnownPeers::new(&file)
        .pin(identity(9).fingerprint())
        .unwrap();
    let refused = refusal_with_known_peers(&file).await;
    assert!(
        matches!(refused, SecurityError::PeerChanged { pinned, .. } if pinned == identity(9).fingerprint()),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_known_peers_file_refuses_everyone() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: it cannot be read.
    let file = dir.path().join("known_peers");
    std::fs::create_dir(&file).unwrap();
    assert!(
        Config::new(dir.path()).is_err(),
        "the state-dir constructor reports it at start"
    );
    let refused = refusal_with_known_peers(&file).await;
    assert!(
        matches!(refused, SecurityError::UntrustedPeer { .. }),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_state_dir_keeps_identity_and_pins_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = Config::new(dir.path()).unwrap();
    let again = Config::new(dir.path()).unwrap();
    let key = |c: &Config| match &c.session.security {
        Security::Noise(n) => n.identity.fingerprint(),
        _ => panic!("not secure"),
    };
    assert_eq!(
        key(&first),
        key(&again),
        "the same identity after a restart"
    );
}

#[tokio::test(start_paused = true)]
async fn plaintext_on_one_side_only_is_refused_with_4008_either_way() {
    for plaintext_watch in [true, false] {
        let network = MockNetwork::new(Faults::default());
        let (dialer, listener) = network.endpoints();
        let mut watch_config = config(1, noise(1));
        let mut phone_config = config(2, noise(2));
        if plaintext_watch {
            watch_config.session.security = Security::InsecurePlaintext;
        } else {
            phone_config.session.security = Security::InsecurePlaintext;
        }
        let hub = Hub::new(listener, phone_config);
        let watch = Interconnect::new(dialer, watch_config);
        let mut events = if plaintext_watch {
            watch.security_events().unwrap()
        } else {
            hub.security_events().unwrap()
        };
        // The plaintext side either sees the handshake (it refuses) or the secure
        // side's refusal of its plaintext Hello, whichever comes first: 4008 both ways.
        let refused = refusal(&mut events).await;
        assert!(
            matches!(
                refused,
                SecurityError::PeerWantsEncryption
                    | SecurityError::RefusedByPeer {
                        code: Code::SECURITY,
                        ..
                    }
            ),
            "plaintext watch {plaintext_watch}: {refused:?}"
        );
        assert_eq!(refused.code(), Code::SECURITY);
        let conn = watch.instance(PKG, None);
        assert!(!conn.diagnosis(Some(Duration::from_secs(5))).await.is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn a_pin_that_cannot_be_saved_is_reported_not_only_logged() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_peers");
    // The lock file's place is taken by a folder: the file can be read, not written.
    std::fs::create_dir(dir.path().join("known_peers.lock")).unwrap();
    let mut watch_config = config(1, noise(1));
    watch_config.known_peers = Some(KnownPeers::new(&file));
    let network = MockNetwork::new(Faults::default());
    let (dialer, listener) = network.endpoints();
    let _hub = Hub::new(listener, config(2, noise(2)));
    let watch = Interconnect::new(dialer, watch_config);
    let mut events = watch.security_events().unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("an event")
            .expect("running");
        match event {
            SecurityEvent::PinNotSaved { fingerprint, .. } => {
                assert_eq!(fingerprint, identity(2).fingerprint());
                break;
            }
            SecurityEvent::Pinned { .. } => panic!("reported as pinned and saved"),
            _ => {}
        }
    }
    assert!(!file.exists());
}

#[tokio::test(start_paused = true)]
async fn a_security_stream_read_late_says_how_many_events_it_dropped() {
    let network = MockNetwork::new(Faults::default());
    let (_, listener) = network.endpoints();
    let hub = Hub::new(listener, config(2, noise(2)));
    let mut events = hub.security_events().unwrap();
    let _app = hub.register(PKG, 1, None).await.unwrap();
    // 100 links authenticate one after another while nobody reads the stream.
    const LINKS: u64 = 100;
    for _ in 0..LINKS {
        let (dialer, _) = network.endpoints();
        let watch = Interconnect::new(dialer, config(1, noise(1)));
        watch.connected().await;
        watch.shutdown().await;
        hub.disconnected().await;
    }
    let (mut authenticated, mut missed) = (0, 0);
    while authenticated + missed < LINKS {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(SecurityEvent::Authenticated { .. })) => authenticated += 1,
            Ok(Some(SecurityEvent::Missed { count })) => missed += count,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        authenticated + missed,
        LINKS,
        "{authenticated} delivered, {missed} said dropped"
    );
    assert!(missed > 0, "the queue is bounded");
}
