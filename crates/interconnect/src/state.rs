//! What a connection reports (its events, ready state, diagnosis, progress), and the
//! state its handles share with the driver. Both the handles (`connection`) and the
//! driver use these; neither is used here, so no module cycle runs through them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use interconnect_proto::{Code, ContentType};
use serde::de::DeserializeOwned;

use crate::ClosedBy;
use crate::error::{Cause, Error};
use crate::sans_io::Receipt;

/// The vendor API's `getReadyState` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyState {
    /// 1: the channel to the peer app is open.
    Open = 1,
    /// 2: it is not (connecting, refused, link down or closed).
    Closed = 2,
}

impl ReadyState {
    /// The vendor API's value, 1 or 2.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The outcome of [`Connection::diagnosis`](crate::Connection::diagnosis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The precise code: 0 when the channel is open, otherwise why not.
    pub code: Code,
}

impl Diagnosis {
    /// Whether the channel is open.
    pub fn is_ok(&self) -> bool {
        self.code == Code::OK
    }

    /// The vendor API's status: 0 (ok), 204 (timeout), 1001 (app not installed) or 1000 (any
    /// other reason, e.g. 1002 or 1007, which [`Diagnosis::code`] keeps).
    pub fn status(&self) -> u16 {
        match self.code {
            Code::OK | Code::TIMEOUT | Code::APP_UNINSTALLED => self.code.as_u16(),
            _ => Code::OTHERS.as_u16(),
        }
    }
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// The bytes.
    pub payload: Bytes,
    /// Set when the sender awaits a reply ([`Connection::reply`](crate::Connection::reply)).
    pub request_id: Option<u32>,
}

impl Incoming {
    /// Decodes the payload into `T` according to its content type (JSON or postcard).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match self.content_type {
            ContentType::Json => serde_json::from_slice(&self.payload).map_err(|e| {
                Error::Serialization(Cause::new(format!("invalid JSON message: {e}"), e))
            }),
            ContentType::Postcard => postcard::from_bytes(&self.payload).map_err(|e| {
                Error::Serialization(Cause::new(format!("invalid postcard message: {e}"), e))
            }),
            ContentType::Binary => Err(Error::Serialization(Cause::message(
                "a binary message has no structure to decode; use `payload`",
            ))),
        }
    }
}

/// What happens on a connection, in the vocabulary of the vendor API's callbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// `onopen`: the channel opened; `is_reconnected` when it had been open before.
    Open {
        /// Whether this re-opened the channel: after a link drop, or on the watch after
        /// the phone app closed it or the phone restarted. Nothing unacknowledged is
        /// lost.
        is_reconnected: bool,
    },
    /// `onclose`: the channel closed or its link went down (1006).
    Close {
        /// Why.
        code: Code,
        /// Detail.
        reason: String,
        /// Who ended it: this side, the peer, or the link.
        by: ClosedBy,
        /// Whether it opens again by itself (an `Open` with `is_reconnected` follows):
        /// after a link drop, and on the watch after the phone app closed, the phone
        /// shut down or restarted. Only this side's [`Connection::close`](crate::Connection::close) (or the end of
        /// this endpoint) ends a connection for good.
        reopens: bool,
    },
    /// `onmessage`: a message, in order, exactly once.
    Message(Incoming),
    /// The peer set a state key ([`Connection::set_state`](crate::Connection::set_state)):
    /// its newest value, or `None` once the peer removed it. Values the peer set in
    /// between may be skipped; an older value never follows a newer one.
    /// [`Connection::peer_state`](crate::Connection::peer_state) reads the same at any
    /// time.
    State {
        /// The key.
        key: String,
        /// The value, with its content type; `None`: removed.
        value: Option<Incoming>,
    },
    /// A file is offered, and the app decides (only when
    /// [`FilesConfig::ask`](crate::FilesConfig::ask) is set): accept it with
    /// [`Connection::accept_file`](crate::Connection::accept_file), refuse it with
    /// [`Connection::reject_file`](crate::Connection::reject_file). Unanswered, it is
    /// accepted once that time passed. A `FileIncoming` follows an acceptance.
    FileOffered {
        /// Identifies the transfer.
        transfer: u32,
        /// The name the sender gave it, as sent (the folder stores it under a sanitised
        /// one).
        name: String,
        /// Size in bytes.
        size: u64,
        /// The sending app's metadata about the file
        /// ([`Connection::send_file_with_meta`](crate::Connection::send_file_with_meta);
        /// empty: none). Decode it with [`decode_meta`](crate::decode_meta).
        meta: Bytes,
    },
    /// A file is arriving (its offer was accepted, resuming at `offset` if part of it
    /// was already here). [`Connection::cancel_incoming`](crate::Connection::cancel_incoming) refuses it.
    FileIncoming {
        /// Identifies the transfer.
        transfer: u32,
        /// The sanitised name it will be stored under (or a numbered variant).
        name: String,
        /// Size in bytes.
        size: u64,
        /// Bytes already held from an interrupted attempt.
        offset: u64,
        /// The sending app's metadata about the file (empty: none), as in `FileOffered`.
        meta: Bytes,
    },
    /// Progress of an incoming file: one event per MiB written to disk, until its
    /// `File` (or `Error`) event. An incoming transfer has no deadline of its own: it
    /// waits, partial file kept, for as long as its sender may resume it.
    FileProgress {
        /// The transfer, as its `FileIncoming` named it.
        transfer: u32,
        /// Bytes written so far (including any held from an interrupted attempt).
        bytes_done: u64,
        /// The file's size.
        total: u64,
    },
    /// `onmessage` with a file (the vendor API's `isFileType`): verified and stored. Fires once
    /// per file, only after size and digest checked out and the file has its final name.
    File {
        /// The transfer, as its `FileIncoming` named it.
        transfer: u32,
        /// Where it is stored.
        path: std::path::PathBuf,
        /// Its file name.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// The peer's app took the durable message `id`
    /// ([`Connection::send_durable`](crate::Connection::send_durable)). Given again after
    /// a restart if this app had not taken the event before it ended. At most
    /// [`MAX_UNTOLD_DELIVERIES`](crate::MAX_UNTOLD_DELIVERIES) wait: an app that does not
    /// read its events learns of later deliveries from `delivered(id)` alone.
    Delivered {
        /// The id `send_durable` returned.
        id: u64,
    },
    /// `onerror`: e.g. the open was refused (1001, 1002, 1007), or an incoming file
    /// failed (its partial file is removed).
    Error {
        /// What.
        code: Code,
        /// Detail.
        message: String,
    },
}

/// Reads the metadata a sending app attached to a file
/// ([`Connection::send_file_with_meta`](crate::Connection::send_file_with_meta)), from a
/// `FileOffered` or `FileIncoming` event's `meta`: JSON, as messages sent with `send` are.
pub fn decode_meta<T: DeserializeOwned>(meta: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(meta)
        .map_err(|e| Error::Serialization(Cause::new(format!("invalid file metadata: {e}"), e)))
}

/// Progress of a file transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// Bytes the receiver acknowledged.
    pub bytes_done: u64,
    /// Size of the file (0 until it has been opened).
    pub total: u64,
    /// Average rate since the transfer started, in bytes per second.
    pub rate: f64,
}

/// The state the driver publishes for one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnState {
    pub(crate) open: bool,
    /// An open attempt is under way (or waits for the link).
    pub(crate) connecting: bool,
    pub(crate) last_error: Option<Code>,
    pub(crate) closed: bool,
    pub(crate) app_version: Option<u32>,
    /// Watch side: the link's last refusal since it was last up, and whether it is
    /// lasting (4007, 4008 from the authenticated phone): diagnosis says it.
    pub(crate) refused: Option<(Code, bool)>,
}

/// Messages the driver queued for the app that the app has not taken yet. Past
/// `max_unread` messages or `MAX_UNREAD_BYTES` bytes the driver stops acknowledging the
/// channel's messages (`held`), so the peer's sends wait; once the app took half of
/// them, [`Events::next`] tells the driver to go on.
#[derive(Debug, Default)]
pub(crate) struct Unread {
    pub(crate) count: AtomicUsize,
    pub(crate) bytes: AtomicUsize,
    pub(crate) held: AtomicBool,
    pub(crate) max: usize,
    /// The latest message the app took that the driver has not acknowledged yet.
    pub(crate) taken: std::sync::Mutex<Option<Receipt>>,
}

/// Bytes of unread messages that hold a channel's acknowledgements back.
pub(crate) const MAX_UNREAD_BYTES: usize = 8 << 20;

impl Unread {
    pub(crate) fn new(max: usize) -> Self {
        Unread {
            max: max.max(1),
            ..Unread::default()
        }
    }

    /// The driver queued a message of `len` bytes; `true` when the channel must now be
    /// held (it was not before).
    pub(crate) fn queued(&self, len: usize) -> bool {
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        let bytes = self.bytes.fetch_add(len, Ordering::AcqRel) + len;
        (count >= self.max || bytes >= MAX_UNREAD_BYTES) && !self.held.swap(true, Ordering::AcqRel)
    }

    /// The driver queued a run of messages of these lengths, in order: the index of the
    /// one that filled the bound when the channel must now be held (it was not before),
    /// as [`queued`](Self::queued) for each in turn would say, with two atomic additions
    /// for the run.
    pub(crate) fn queued_run(&self, lens: impl Iterator<Item = usize> + Clone) -> Option<usize> {
        let (n, total) = lens
            .clone()
            .fold((0, 0), |(n, total), len| (n + 1, total + len));
        let count = self.count.fetch_add(n, Ordering::AcqRel);
        let bytes = self.bytes.fetch_add(total, Ordering::AcqRel);
        if count + n < self.max && bytes + total < MAX_UNREAD_BYTES {
            return None;
        }
        let (mut count, mut bytes) = (count, bytes);
        let at = lens.into_iter().position(|len| {
            count += 1;
            bytes += len;
            count >= self.max || bytes >= MAX_UNREAD_BYTES
        })?;
        (!self.held.swap(true, Ordering::AcqRel)).then_some(at)
    }

    /// Notes the latest message taken; `true` when the driver must be told (it was not
    /// already).
    pub(crate) fn last_taken(&self, receipt: Receipt) -> bool {
        let mut slot = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        slot.replace(receipt).is_none()
    }

    /// The latest message taken, for the driver to acknowledge.
    pub(crate) fn take_receipt(&self) -> Option<Receipt> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The app took a message of `len` bytes; `true` when the driver must go on.
    pub(crate) fn taken(&self, len: usize) -> bool {
        let count = self.count.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let bytes = self
            .bytes
            .fetch_sub(len, Ordering::AcqRel)
            .saturating_sub(len);
        count <= self.max / 2
            && bytes <= MAX_UNREAD_BYTES / 2
            && self.held.swap(false, Ordering::AcqRel)
    }
}

/// What the driver publishes about the link.
#[derive(Clone, Debug, Default)]
pub(crate) struct LinkStatus {
    pub(crate) peer: PeerDeviceStatus,
    /// Links that came up so far. A link can come up and go again within one turn of
    /// the driver (a peer that leaves right after the handshake), and a watch channel
    /// keeps only the last value: the count lets a waiter see such a link anyway.
    pub(crate) links_up: u64,
    /// The limits of the link that is up (on a hub of several watches, of the link that
    /// came up last).
    pub(crate) limits: Option<LinkLimits>,
    /// Watches connected (a hub of several counts them; otherwise unused).
    pub(crate) connected: u32,
    /// The name the peer device said on its last link, if it said one.
    pub(crate) peer_name: Option<std::sync::Arc<str>>,
}

/// What the link that is up carries: the same both ways, as both sides agreed in the
/// Hello (the smaller of their frame limits, within the link's own, less what sealing
/// takes on an encrypted link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkLimits {
    /// The largest message `send` takes now, and the largest the peer can send this
    /// side. A larger one fails with [`Error::TooLarge`](crate::Error::TooLarge) naming
    /// this number.
    pub max_message_len: usize,
    /// The largest frame either side sends, before sealing.
    pub max_frame_len: usize,
    /// The bytes of a file one frame carries.
    pub max_chunk_len: usize,
    /// On a radio link (BLE): its ATT MTU, and its PHY and connection interval when the
    /// stack says.
    pub radio: Option<crate::Radio>,
    /// What the link moved over the last seconds, when it has been up that long.
    pub throughput: Option<Throughput>,
}

impl LinkLimits {
    pub(crate) fn new(limits: interconnect_proto::Limits, radio: Option<crate::Radio>) -> Self {
        LinkLimits {
            max_message_len: limits.max_message_len(),
            max_frame_len: limits.max_frame_len,
            max_chunk_len: limits.max_chunk_len(),
            radio,
            throughput: None,
        }
    }
}

/// Bytes per second a link moved over the last seconds (frames as they go on the wire,
/// sealing and framing included), each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Throughput {
    /// To the peer.
    pub sent: u64,
    /// From the peer.
    pub received: u64,
}

/// Whether the link to the peer device is up (the vendor API's `getPeerDeviceStatus`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerDeviceStatus {
    /// 0: not connected.
    #[default]
    Disconnected = 0,
    /// 1: connected (link up, handshake done).
    Connected = 1,
}

impl PeerDeviceStatus {
    /// The vendor API's value, 0 or 1.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The span a link's rate is measured over (see the driver's `meter`).
pub(crate) const METER_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// What a handle reads of its driver's link: the status the driver publishes, and the
/// rate of the last seconds.
#[derive(Clone, Debug)]
pub(crate) struct LinkView {
    pub(crate) status: tokio::sync::watch::Receiver<LinkStatus>,
    pub(crate) meter: std::sync::Arc<Meter>,
}

impl LinkView {
    /// The name the peer device said (on a hub of several, this connection's watch).
    pub(crate) fn peer_name(&self) -> Option<String> {
        self.status.borrow().peer_name.as_deref().map(Into::into)
    }

    /// The link's limits, with its rate of the last seconds, while it is up.
    pub(crate) fn limits(&self) -> Option<LinkLimits> {
        let mut limits = self.status.borrow().limits?;
        limits.throughput = self.meter.throughput();
        Some(limits)
    }
}

/// The published rate, shared with the handles.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    rate: std::sync::Mutex<Option<(tokio::time::Instant, Throughput)>>,
}

impl Meter {
    /// The rate of the last seconds; `None` before the link carried traffic for half a
    /// second, or when the last sample is older than the window.
    pub(crate) fn throughput(&self) -> Option<Throughput> {
        let rate = *self.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.filter(|(at, _)| at.elapsed() <= METER_WINDOW)
            .map(|(_, rate)| rate)
    }

    pub(crate) fn publish(&self, rate: Option<(tokio::time::Instant, Throughput)>) {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner()) = rate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run counted at once holds the channel at the message one at a time would, and
    /// leaves the same counts.
    #[test]
    fn a_run_counted_at_once_holds_where_one_at_a_time_would() {
        const MIB: usize = 1 << 20;
        let runs: [&[usize]; 5] = [
            &[],
            &[10],
            &[1, 2, 3],
            &[1; 7],
            &[3 * MIB, 3 * MIB, 3 * MIB],
        ];
        for max in [1, 4, 1024] {
            for before in 0..6 {
                for lens in runs {
                    let (one, run) = (Unread::new(max), Unread::new(max));
                    for unread in [&one, &run] {
                        for _ in 0..before {
                            let _ = unread.queued(1);
                        }
                    }
                    let held: Vec<bool> = lens.iter().map(|&len| one.queued(len)).collect();
                    let at = run.queued_run(lens.iter().copied());
                    assert_eq!(at, held.iter().position(|&h| h), "{max} {before} {lens:?}");
                    assert_eq!(
                        one.count.load(Ordering::Relaxed),
                        run.count.load(Ordering::Relaxed)
                    );
                    assert_eq!(
                        one.bytes.load(Ordering::Relaxed),
                        run.bytes.load(Ordering::Relaxed)
                    );
                    assert_eq!(
                        one.held.load(Ordering::Relaxed),
                        run.held.load(Ordering::Relaxed)
                    );
                }
            }
        }
    }
}
