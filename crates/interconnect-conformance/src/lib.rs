//! One conformance suite for every transport, in the way rustls runs one API suite per
//! crypto provider: each transport crate implements [`Harness`] (how to make a connected
//! watch/phone pair of transports) and expands [`conformance_tests!`] in a test file, and
//! gets the same end-to-end cases: open, messages both ways in order, the maximum message
//! size and one byte more, request/reply, a file, a link cut in the middle of a file with
//! resumption, close from either side, diagnosis, the version query, and 1001/1002/1007.
//!
//! A transport that serves several watches on one hub also implements
//! [`several::Fleet`] and expands [`several_watches_tests!`].
//!
//! Cutting a link works the same on every transport: the watch's transport is wrapped in
//! [`Cuttable`], which fails the current link on demand, and the watch then drops it as
//! it would any failed link.

pub mod flood;
pub mod proxy;
pub mod several;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use interconnect::{
    ClosedBy, Config, Connection, ConnectionEvent, Events, FilesConfig, Hub, Interconnect, Link,
    LinkReceiver, LinkSender, Store, Transport, TransportError,
};
use interconnect_proto::{Code, ContentType, DeviceId};
use tokio::sync::watch;

/// How a transport crate provides a connected pair.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Whether the cases run on tokio's paused clock (in-memory links) or in real time
    /// (real sockets, whose readiness the paused clock does not see).
    const PAUSED_CLOCK: bool;

    /// A fresh watch transport (dials) and phone transport (accepts), connected.
    async fn pair(&self) -> (Box<dyn Transport>, Box<dyn Transport>);
}

/// Runs one case on a current-thread runtime, on the paused clock if `paused`.
pub fn run<F: std::future::Future<Output = ()>>(paused: bool, case: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .expect("runtime");
    runtime.block_on(case());
}

/// Expands every conformance case as a `#[test]` for the harness built by `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:ty, $make:expr) => {
        $crate::conformance_tests!(@cases $harness, $make,
            open_and_messages_both_ways_in_order,
            maximum_message_size_and_one_byte_more,
            request_and_reply,
            file_transfer,
            link_cut_during_a_file_resumes,
            close_from_the_watch,
            close_from_the_phone,
            diagnosis_and_version,
            refusals_1001_1002_1007,
            state_both_ways_across_a_link_cut,
            durable_both_ways_across_a_link_cut,
        );
    };
    (@cases $harness:ty, $make:expr, $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let paused = <$harness as $crate::Harness>::PAUSED_CLOCK;
                $crate::run(paused, || async {
                    let harness: $harness = $make;
                    $crate::cases::$case(&harness).await;
                });
            }
        )*
    };
}

/// Wraps a transport so the test can fail its current link at any moment.
pub struct Cuttable {
    inner: Box<dyn Transport>,
    current: Arc<Mutex<Option<watch::Sender<bool>>>>,
    seen: Arc<Seen>,
}

/// What a [`Cuttable`] saw of its links.
#[derive(Default)]
struct Seen {
    links: std::sync::atomic::AtomicU64,
    max_frame_len: std::sync::atomic::AtomicUsize,
}

/// Cuts the current link of a [`Cuttable`] transport.
#[derive(Clone)]
pub struct Cutter {
    current: Arc<Mutex<Option<watch::Sender<bool>>>>,
    seen: Arc<Seen>,
}

impl Cutter {
    /// Links the transport made so far.
    pub fn links_made(&self) -> u64 {
        self.seen.links.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The frame limit of the last link.
    pub fn link_max_frame_len(&self) -> usize {
        self.seen
            .max_frame_len
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fails the current link: the next send or receive on it errors.
    pub fn cut(&self) {
        if let Some(cut) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = cut.send(true);
        }
    }
}

impl Cuttable {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Transport>) -> (Cuttable, Cutter) {
        let current = Arc::new(Mutex::new(None));
        let seen = Arc::new(Seen::default());
        (
            Cuttable {
                inner,
                current: current.clone(),
                seen: seen.clone(),
            },
            Cutter { current, seen },
        )
    }
}

#[async_trait]
impl Transport for Cuttable {
    async fn next_link(&mut self) -> Result<Link, TransportError> {
        let link = self.inner.next_link().await?;
        use std::sync::atomic::Ordering::Relaxed;
        self.seen.links.fetch_add(1, Relaxed);
        self.seen.max_frame_len.store(link.max_frame_len, Relaxed);
        let (tx, rx) = watch::channel(false);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        Ok(Link {
            sender: Box::new(CutSender {
                inner: link.sender,
                cut: rx.clone(),
            }),
            receiver: Box::new(CutReceiver {
                inner: link.receiver,
                cut: rx,
            }),
            max_frame_len: link.max_frame_len,
            source: link.source,
        })
    }

    fn is_reliable(&self) -> bool {
        self.inner.is_reliable()
    }

    fn is_stream(&self) -> bool {
        self.inner.is_stream()
    }
}

struct CutSender {
    inner: Box<dyn LinkSender>,
    cut: watch::Receiver<bool>,
}

#[async_trait]
impl LinkSender for CutSender {
    async fn send(&mut self, frame: Bytes) -> Result<(), TransportError> {
        if *self.cut.borrow() {
            return Err(TransportError::Closed);
        }
        self.inner.send(frame).await
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        if *self.cut.borrow() {
            return Err(TransportError::Closed);
        }
        self.inner.flush().await
    }
}

struct CutReceiver {
    inner: Box<dyn LinkReceiver>,
    cut: watch::Receiver<bool>,
}

#[async_trait]
impl LinkReceiver for CutReceiver {
    async fn recv(&mut self) -> Result<Option<BytesMut>, TransportError> {
        if *self.cut.borrow() {
            return Err(TransportError::Closed);
        }
        tokio::select! {
            biased;
            _ = self.cut.changed() => Err(TransportError::Closed),
            frame = self.inner.recv() => frame,
        }
    }

    fn limit_frames(&mut self, max_frame_len: usize) {
        self.inner.limit_frames(max_frame_len);
    }
}

/// The cases, each a complete scenario over a fresh pair.
pub mod cases {
    use super::*;

    const PKG: &str = "com.example.conformance";
    const FP: &str = "AA:BB:CC";

    pub(crate) struct Ends {
        pub(crate) watch: Interconnect,
        pub(crate) hub: Hub,
        pub(crate) cutter: Cutter,
        pub(crate) dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    pub(crate) async fn ends<H: Harness>(harness: &H) -> Ends {
        let (watch_transport, phone_transport) = harness.pair().await;
        let (watch_transport, cutter) = Cuttable::new(watch_transport);
        let send_dir = tempfile::tempdir().expect("temp dir");
        let recv_dir = tempfile::tempdir().expect("temp dir");
        let mut phone = Config::in_memory(DeviceId([2; 16]));
        let mut files = FilesConfig::new(recv_dir.path());
        files.reserve_free_bytes = 0;
        phone.files = Some(files);
        phone.seed = Some(2);
        let store = |dir: &tempfile::TempDir| Store::open(dir.path().join("store.redb"));
        phone.store = Some(store(&recv_dir).expect("the phone's store"));
        let mut watch = Config::in_memory(DeviceId([1; 16]));
        watch.seed = Some(1);
        watch.store = Some(store(&send_dir).expect("the watch's store"));
        watch.backoff.initial = Duration::from_millis(20);
        Ends {
            hub: Hub::new(phone_transport, phone),
            watch: Interconnect::new(watch_transport, watch),
            cutter,
            dirs: (send_dir, recv_dir),
        }
    }

    pub(crate) async fn next(events: &mut Events) -> ConnectionEvent {
        tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("an event within a minute")
            .expect("the stream is open")
    }

    pub(crate) async fn next_message(events: &mut Events) -> interconnect::Incoming {
        loop {
            if let ConnectionEvent::Message(m) = next(events).await {
                return m;
            }
        }
    }

    async fn open(e: &Ends) -> (Connection, Connection) {
        let app = e.hub.register(PKG, 5, Some(FP)).await.expect("register");
        let conn = e.watch.instance(PKG, Some(FP));
        let diagnosis = conn.diagnosis(Some(Duration::from_secs(30))).await;
        assert!(diagnosis.is_ok(), "{diagnosis:?}");
        (conn, app)
    }

    /// Open, then 100 messages each way arrive in order.
    pub async fn open_and_messages_both_ways_in_order<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut watch_events = conn.events().unwrap();
        let mut app_events = app.events().unwrap();
        assert_eq!(
            next(&mut watch_events).await,
            ConnectionEvent::Open {
                is_reconnected: false
            }
        );
        assert_eq!(
            next(&mut app_events).await,
            ConnectionEvent::Open {
                is_reconnected: false
            }
        );
        let to_phone: Vec<_> = (0..100u32).map(|i| conn.send(&i)).collect();
        let to_watch: Vec<_> = (0..100u32).map(|i| app.send(&i)).collect();
        for i in 0..100u32 {
            assert_eq!(next_message(&mut app_events).await.decode::<u32>(), Ok(i));
            assert_eq!(next_message(&mut watch_events).await.decode::<u32>(), Ok(i));
        }
        // Acknowledged once each app took them.
        for send in to_phone.into_iter().chain(to_watch) {
            send.await.expect("acknowledged");
        }
    }

    /// The largest message passes; one byte more is refused with 4001.
    pub async fn maximum_message_size_and_one_byte_more<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut app_events = app.events().unwrap();
        let max = e.watch_max_message(&conn).await;
        // What the link's frame limit allows, sealed, within the default maximum.
        let link = e.cutter.link_max_frame_len();
        let frame = interconnect_proto::DEFAULT_MAX_FRAME_LEN
            .min(interconnect_proto::max_unsealed_len(link));
        assert_eq!(
            max,
            interconnect_proto::Limits::new(frame).max_message_len(),
            "the maximum message on a link of {link}-byte frames"
        );
        let payload = Bytes::from(vec![0x5a; max]);
        let sent = conn.send_bytes(ContentType::Binary, payload.clone());
        assert_eq!(next_message(&mut app_events).await.payload, payload);
        sent.await.expect("maximum size passes");
        let error = conn
            .send_bytes(ContentType::Binary, Bytes::from(vec![0; max + 1]))
            .await
            .expect_err("one byte more is refused");
        assert_eq!(error.code(), Code::TOO_LARGE);
        // The same number the other way: what the phone received, it can send back.
        assert_eq!(e.watch_max_message(&app).await, max, "the phone's maximum");
        let mut watch_events = conn.events().unwrap();
        let sent = app.send_bytes(ContentType::Binary, payload.clone());
        assert_eq!(next_message(&mut watch_events).await.payload, payload);
        sent.await.expect("the phone sends the maximum back");
    }

    impl Ends {
        /// The largest message the negotiated link carries (found by the refusal's
        /// report, so the case holds for any transport's frame limit).
        async fn watch_max_message(&self, conn: &Connection) -> usize {
            let huge = Bytes::from(vec![0; interconnect_proto::MAX_MESSAGE_LEN + 1]);
            match conn.send_bytes(ContentType::Binary, huge).await {
                Err(interconnect::Error::TooLarge { max, .. }) => max,
                other => panic!("a message over the format's maximum was not refused: {other:?}"),
            }
        }
    }

    /// Several requests in flight get their own replies.
    pub async fn request_and_reply<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut app_events = app.events().unwrap();
        let responder = tokio::spawn({
            let app = app.clone();
            async move {
                for _ in 0..3 {
                    let request = next_message(&mut app_events).await;
                    let n: u32 = request.decode().expect("a number");
                    app.reply(&request, &(n * 2)).await.expect("reply sent");
                }
            }
        });
        let replies: Vec<_> = (1..=3u32)
            .map(|n| conn.request::<u32, u32>(&n, Duration::from_secs(30)))
            .collect();
        for (n, reply) in (1..=3u32).zip(replies) {
            assert_eq!(reply.await, Ok(n * 2));
        }
        responder.await.expect("responder");
    }

    pub(crate) fn file_content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
    }

    pub(crate) async fn stored(events: &mut Events) -> (PathBuf, u64) {
        loop {
            match next(events).await {
                ConnectionEvent::File { path, size, .. } => return (path, size),
                ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
                _ => {}
            }
        }
    }

    /// A file arrives identical.
    pub async fn file_transfer<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut app_events = app.events().unwrap();
        let data = file_content(300_000);
        let path = e.dirs.0.path().join("report.bin");
        std::fs::write(&path, &data).expect("write");
        conn.send_file(&path).await.expect("stored");
        let (stored_path, size) = stored(&mut app_events).await;
        assert_eq!(size, data.len() as u64);
        assert!(std::fs::read(stored_path).expect("read") == data);
    }

    /// The link is cut in the middle of a file; it resumes and arrives identical.
    pub async fn link_cut_during_a_file_resumes<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut app_events = app.events().unwrap();
        let data = file_content(6 << 20);
        let path = e.dirs.0.path().join("big.bin");
        std::fs::write(&path, &data).expect("write");
        let mut watch_events = conn.events().unwrap();
        let transfer = conn.send_file(&path);
        let mut progress = transfer.progress_stream();
        let cutter = e.cutter.clone();
        let links_before = e.cutter.links_made();
        let cut = tokio::spawn(async move {
            use std::pin::Pin;
            loop {
                let next = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(Pin::new(&mut progress), cx)
                })
                .await;
                match next {
                    // Strictly inside the file: the final update (done == total) would
                    // cut after the file is complete.
                    Some(p) if p.total > 0 && p.bytes_done >= p.total / 3 => {
                        if p.bytes_done >= p.total {
                            return None;
                        }
                        cutter.cut();
                        // Every later update: a restart from zero would show the
                        // receiver's offset falling back.
                        let mut after = Vec::new();
                        while let Some(q) = std::future::poll_fn(|cx| {
                            futures_core::Stream::poll_next(Pin::new(&mut progress), cx)
                        })
                        .await
                        {
                            after.push(q.bytes_done);
                            if q.bytes_done >= q.total {
                                break;
                            }
                        }
                        return Some((p.bytes_done, p.total, after));
                    }
                    Some(_) => {}
                    None => return None,
                }
            }
        });
        transfer.await.expect("stored despite the cut");
        let (done, total, after) = cut
            .await
            .expect("cutter")
            .expect("the cut came mid-file, with progress at a third");
        assert!(done < total);
        assert!(
            !after.is_empty() && after.iter().all(|b| *b >= done),
            "resumed from {done}, not restarted: progress after the cut {after:?}"
        );
        let (stored_path, _) = stored(&mut app_events).await;
        assert!(e.cutter.links_made() > links_before, "a new link came up");
        let mut reconnected = false;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(10), watch_events.next()).await
        {
            reconnected |= matches!(
                event,
                ConnectionEvent::Open {
                    is_reconnected: true
                }
            );
        }
        assert!(reconnected, "the channel reopened with is_reconnected");
        assert!(std::fs::read(stored_path).expect("read") == data);
    }

    /// The next close event's code, reason, closer and whether it reopens.
    async fn next_close(events: &mut Events) -> (Code, String, ClosedBy, bool) {
        loop {
            if let ConnectionEvent::Close {
                code,
                reason,
                by,
                reopens,
            } = next(events).await
            {
                return (code, reason, by, reopens);
            }
        }
    }

    /// Close from the watch reaches the phone app with code and reason.
    pub async fn close_from_the_watch<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut app_events = app.events().unwrap();
        conn.close(Code(4321), "watch done").await.expect("closed");
        assert_eq!(
            next_close(&mut app_events).await,
            (Code(4321), "watch done".into(), ClosedBy::Peer, false)
        );
        assert_eq!(
            app.send(&1).await.map_err(|e| e.code()),
            Err(Code::CONNECTION_LOST)
        );
    }

    /// Close from the phone reaches the watch with code and reason; the watch then tries
    /// to reopen, refused (1002) until the app registers again.
    pub async fn close_from_the_phone<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut watch_events = conn.events().unwrap();
        app.close(Code(4322), "phone done").await.expect("closed");
        assert_eq!(
            next_close(&mut watch_events).await,
            (Code(4322), "phone done".into(), ClosedBy::Peer, true)
        );
        assert_eq!(
            conn.diagnosis(Some(Duration::from_secs(20))).await.code,
            Code::APP_NOT_CONNECTED
        );
    }

    /// Diagnosis reports 0 on an open channel; the version query gives the version or -1.
    pub async fn diagnosis_and_version<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, _app) = open(&e).await;
        assert_eq!(conn.diagnosis(None).await.status(), 0);
        assert_eq!(conn.peer_client_version_code().await, Ok(5));
        let missing = e.watch.instance("com.not.installed", None);
        assert_eq!(missing.peer_client_version_code().await, Ok(-1));
        assert_eq!(missing.diagnosis(None).await.status(), 1001);
        assert_eq!(e.watch.peer_device_status().code(), 1);
    }

    /// Not installed: 1001; detached: 1002; wrong fingerprint: 1007.
    pub async fn refusals_1001_1002_1007<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (_conn, _app) = open(&e).await;
        let detached = e
            .hub
            .register("com.example.detached", 1, None)
            .await
            .expect("register");
        drop(detached);
        let cases = [
            ("com.example.missing", None, Code::APP_UNINSTALLED),
            ("com.example.detached", None, Code::APP_NOT_CONNECTED),
            (PKG, Some("00:00"), Code::SIGNATURE_MISMATCH),
        ];
        for (package, fingerprint, code) in cases {
            let conn = e.watch.instance(package, fingerprint);
            let mut events = conn.events().unwrap();
            assert_eq!(conn.diagnosis(None).await.code, code, "{package}");
            assert!(
                matches!(next(&mut events).await, ConnectionEvent::Error { code: c, .. } if c == code)
            );
            assert!(conn.send(&"nothing passes").await.is_err());
        }
    }

    /// The next state event's key and value (JSON, as text), skipping other events.
    async fn next_state(events: &mut Events) -> (String, Option<serde_json::Value>) {
        loop {
            if let ConnectionEvent::State { key, value } = next(events).await {
                return (key, value.map(|v| v.decode().expect("JSON")));
            }
        }
    }

    /// State both ways: each side mirrors the other's; values set while the link is cut
    /// arrive once it is back, the newest last, and a removal arrives as no value.
    pub async fn state_both_ways_across_a_link_cut<H: Harness>(harness: &H) {
        use serde_json::json;
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut watch_events = conn.events().unwrap();
        let mut app_events = app.events().unwrap();
        conn.set_state("heart-rate", &70).unwrap();
        app.set_state("units", &"metric").unwrap();
        let units = ("units".to_string(), Some(json!("metric")));
        assert_eq!(next_state(&mut watch_events).await, units);
        let rate = ("heart-rate".to_string(), Some(json!(70)));
        assert_eq!(next_state(&mut app_events).await, rate);
        e.cutter.cut();
        for hr in 71..=90 {
            conn.set_state("heart-rate", &hr).unwrap();
        }
        app.remove_state("units").unwrap();
        // What was on its way when the link went may come first; never an older value
        // after a newer one, and the newest at the end.
        let mut last = 70;
        while last < 90 {
            let (key, value) = next_state(&mut app_events).await;
            assert_eq!(key, "heart-rate");
            let hr = value.and_then(|v| v.as_u64()).expect("a value");
            assert!(hr > last, "{hr} after {last}");
            last = hr;
        }
        assert_eq!(
            next_state(&mut watch_events).await,
            ("units".to_string(), None)
        );
        let held = app.peer_state("heart-rate").map(|v| v.decode::<u32>());
        assert_eq!(held, Some(Ok(90)));
        assert!(conn.peer_states().is_empty());
    }

    /// Durable messages both ways: every one arrives once and in order although the link
    /// is cut while they flow, and each sender hears of each delivery.
    pub async fn durable_both_ways_across_a_link_cut<H: Harness>(harness: &H) {
        let e = ends(harness).await;
        let (conn, app) = open(&e).await;
        let mut watch_events = conn.events().unwrap();
        let mut app_events = app.events().unwrap();
        for n in 0..30u32 {
            assert_eq!(conn.send_durable(&n).await, Ok(u64::from(n) + 1));
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            got.push(next_message(&mut app_events).await.decode::<u32>().unwrap());
        }
        e.cutter.cut();
        for n in 100..105u32 {
            app.send_durable(&n).await.expect("committed");
        }
        while got.len() < 30 {
            got.push(next_message(&mut app_events).await.decode::<u32>().unwrap());
        }
        assert_eq!(got, (0..30).collect::<Vec<_>>(), "once each, in order");
        let mut back = Vec::new();
        let mut delivered = Vec::new();
        while back.len() < 5 || delivered.last() != Some(&30) {
            // The phone's app keeps reading, as an app does: a resend of what it held
            // unread when the link came back is dropped as it takes it.
            let event = tokio::select! {
                event = next(&mut watch_events) => event,
                Some(event) = app_events.next() => {
                    assert!(!matches!(event, ConnectionEvent::Message(_)), "{event:?}");
                    continue;
                }
            };
            match event {
                ConnectionEvent::Message(m) => back.push(m.decode::<u32>().unwrap()),
                ConnectionEvent::Delivered { id } => delivered.push(id),
                _ => {}
            }
        }
        assert_eq!(back, (100..105).collect::<Vec<_>>());
        assert_eq!(
            delivered,
            (1..=30).collect::<Vec<_>>(),
            "each delivery told once"
        );
        let sent = tokio::time::timeout(Duration::from_secs(60), app.delivered(5)).await;
        assert_eq!(sent.expect("in a minute"), Ok(()));
        assert!(conn.outstanding().is_empty() && app.outstanding().is_empty());
    }
}
