//! The watches of a hub that serves several ([`Config::max_watches`] above 1): the
//! stream an app registered with [`Hub::register_watches`] reads, one [`Watch`] per
//! device, each with its own [`Connection`].
//!
//! [`Config::max_watches`]: crate::Config::max_watches
//! [`Hub::register_watches`]: crate::Hub::register_watches

use interconnect_proto::DeviceId;
use tokio::sync::mpsc;

use crate::connection::Connection;
use crate::security::Fingerprint;

/// A watch a hub serves: who it is, as its handshake proved. The name it gives itself
/// (`SessionConfig::name`) comes once its link is up:
/// [`Connection::peer_name`](crate::Connection::peer_name) on its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Device {
    /// The id the watch announced (its own: derived from its key by [`Config::new`]).
    ///
    /// [`Config::new`]: crate::Config::new
    pub id: DeviceId,
    /// The watch's key, on secure links (`None` in plaintext mode, where the id is all
    /// that tells two watches apart).
    pub fingerprint: Option<Fingerprint>,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fingerprint {
            Some(key) => write!(f, "{} ({key})", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// One watch of an app registered on a hub of several: the connection to the app's
/// peer on that watch, with the API of a single-watch hub's [`Connection`]. It lives as
/// long as the hub does (it outlives the watch's links and restarts); its events are
/// that watch's alone, its sends go to that watch alone. Dropping it detaches the app
/// from that watch only (the watch then gets 1002).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Watch {
    /// Which watch.
    pub device: Device,
    /// The app's connection to that watch.
    pub connection: Connection,
}

/// The watches an app meets on a hub of several, each the first time it connects
/// ([`Hub::register_watches`](crate::Hub::register_watches)), and then every watch
/// that was already known when the app registered. Ends when the hub stops, or when the
/// same package registers again.
#[derive(Debug)]
pub struct Watches {
    pub(crate) rx: mpsc::UnboundedReceiver<Watch>,
    /// The watches handed out so far, while the app holds their connection.
    pub(crate) handed: Vec<(Device, std::sync::Weak<crate::connection::Shared>)>,
}

impl Watches {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Watch>) -> Watches {
        Watches {
            rx,
            handed: Vec::new(),
        }
    }

    /// The next watch; `None` once the hub stopped or the app registered again.
    pub async fn next(&mut self) -> Option<Watch> {
        std::future::poll_fn(|cx| self.poll_watch(cx)).await
    }

    fn poll_watch(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Watch>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(watch)) = &polled {
            self.handed.retain(|(_, conn)| conn.strong_count() > 0);
            self.handed.push((
                watch.device,
                std::sync::Arc::downgrade(&watch.connection.shared),
            ));
        }
        polled
    }

    /// Sends `value` to every watch taken from this stream whose connection the app
    /// still holds and whose channel is open now, as [`Connection::send`] does for one:
    /// each watch's outcome is its own (a watch that is away does not hold up the rest).
    /// Watches not yet taken from the stream are not among them.
    ///
    /// [`Connection::send`]: crate::Connection::send
    pub fn send_to_all<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Vec<(Device, crate::connection::Sending)> {
        self.handed
            .iter()
            .filter_map(|(device, conn)| Some((*device, conn.upgrade()?)))
            .map(|(device, shared)| (device, Connection { shared }))
            .filter(|(_, conn)| conn.ready_state() == crate::ReadyState::Open)
            .map(|(device, conn)| (device, conn.send(value)))
            .collect()
    }
}

impl futures_core::Stream for Watches {
    type Item = Watch;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Watch>> {
        self.poll_watch(cx)
    }
}
