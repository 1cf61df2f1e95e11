//! Latest-wins app state: each side of a connection keeps named values
//! ([`Connection::set_state`](crate::Connection::set_state)) that its peer mirrors. Only a
//! key's newest value matters: values set while the link is down, or while an older
//! value of the key is on its way, are coalesced, and the newest follows; a value older
//! than one the peer applied never overwrites it.
//!
//! The handles and the driver share two tables per connection: this side's own values
//! (what the app set, and what of it is on its way) and the peer's (what arrived). An
//! update travels as a message of the channel (`Exchange::State`), so it is sequenced,
//! acknowledged and resent across link drops like any message, one per key at a time.
//! Each time the channel opens every value goes again, after an update that names only
//! the sender's origin (a random number per connection handle): a peer that restarted
//! gets them all, and one that sees a new origin drops what it held of the old one (the
//! sender started over) and tells its app, key by key.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use interconnect_proto::{ContentType, MAX_STATE_KEY_LEN, StateUpdate};

use crate::error::Error;
use crate::state::Incoming;

/// Most keys a connection's own state holds (removed keys count until the peer has heard
/// of the removal).
pub const MAX_STATE_KEYS: usize = 64;
/// Most bytes of values a connection's own state holds, all keys together.
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// One connection's two tables.
pub(crate) struct States {
    /// Where this side's values are kept across restarts, and under which scope.
    store: Option<(crate::Store, String)>,
    own: Mutex<Own>,
    peer: Mutex<Peer>,
    /// Woken whenever this side's values change or land, and when the driver stops.
    changed: tokio::sync::Notify,
}

impl Default for States {
    fn default() -> States {
        let own = Own {
            origin: rand::random(),
            ..Own::default()
        };
        States {
            store: None,
            own: Mutex::new(own),
            peer: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }
}

impl States {
    /// With a store: this side's values as an earlier run left them (same origin, so
    /// the peer keeps what it holds), each set kept there too. Without: as `default`.
    pub(crate) fn load(store: Option<crate::Store>, scope: String) -> States {
        let Some(store) = store else {
            return States::default();
        };
        let mut states = States::default();
        match store.load_state(&scope) {
            Ok(rows) => {
                let own = states.own.get_mut().unwrap_or_else(|e| e.into_inner());
                for row in rows {
                    own.origin = row.origin;
                    own.version = own.version.max(row.version);
                    own.bytes += row.value.as_ref().map_or(0, Bytes::len);
                    let value = OwnValue {
                        version: row.version,
                        content_type: row.content_type,
                        value: row.value,
                        dirty: true,
                        flight: None,
                    };
                    own.keys.insert(row.key, value);
                }
            }
            Err(error) => tracing::error!(%scope, %error, "the state could not be read"),
        }
        match store.load_peer_state(&scope) {
            Ok(rows) => {
                let peer = states.peer.get_mut().unwrap_or_else(|e| e.into_inner());
                for row in rows {
                    let Some(payload) = row.value else { continue };
                    peer.origin = Some(row.origin);
                    peer.bytes += payload.len();
                    let incoming = Incoming {
                        content_type: row.content_type,
                        payload,
                        request_id: None,
                    };
                    peer.keys.insert(row.key, (row.version, incoming));
                }
            }
            Err(error) => tracing::error!(%scope, %error, "the peer's state could not be read"),
        }
        states.store = Some((store, scope));
        states
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-written that matters here.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// This side's values.
#[derive(Default)]
struct Own {
    /// The driver let go of the connection: nothing will land any more.
    stopped: bool,
    /// Names this side's state as a whole (see `StateUpdate::origin`).
    origin: u64,
    keys: BTreeMap<String, OwnValue>,
    /// Bytes of all values together.
    bytes: usize,
    /// The last version given (one counter for every key, so each key's versions rise).
    version: u64,
    /// The driver was told of a change and has not looked since.
    told: bool,
    /// Numbers the updates on their way, so an outcome finds its key.
    next_flight: u32,
}

struct OwnValue {
    version: u64,
    content_type: ContentType,
    /// `None`: removed (kept until the peer heard so).
    value: Option<Bytes>,
    /// The newest version still has to go out.
    dirty: bool,
    /// The update on its way, and the version it carries.
    flight: Option<(u32, u64)>,
}

/// The peer's values.
#[derive(Default)]
struct Peer {
    /// The origin of the values held.
    origin: Option<u64>,
    keys: BTreeMap<String, (u64, Incoming)>,
    bytes: usize,
}

/// The driver gives updates on their way send ids with this bit set, apart from the
/// slots of messages (and from durable messages' flights); they are numbered below
/// [`FLIGHTS`].
pub(crate) const FLIGHT: u32 = 1 << 31;
/// Updates on their way are numbered below this.
const FLIGHTS: u32 = 1 << 30;

/// What the driver hands the session for one key.
pub(crate) struct Outgoing {
    pub(crate) flight: u32,
    pub(crate) content_type: ContentType,
    pub(crate) payload: Bytes,
}

impl States {
    /// The app sets (or with `None` removes) a key; `true` when the driver must be told.
    pub(crate) fn set(
        &self,
        key: &str,
        content_type: ContentType,
        value: Option<Bytes>,
    ) -> Result<bool, Error> {
        if key.is_empty() || key.len() > MAX_STATE_KEY_LEN {
            return Err(Error::StateLimit {
                limit: "key length in bytes (the empty key is reserved)",
                max: MAX_STATE_KEY_LEN,
            });
        }
        let mut own = lock(&self.own);
        let old_len = own
            .keys
            .get(key)
            .map(|v| v.value.as_ref().map_or(0, Bytes::len));
        if old_len.is_none() && value.is_none() {
            return Ok(false); // removing what was never set
        }
        if old_len.is_none() && own.keys.len() >= MAX_STATE_KEYS {
            return Err(Error::StateLimit {
                limit: "number of keys",
                max: MAX_STATE_KEYS,
            });
        }
        let new_len = value.as_ref().map_or(0, Bytes::len);
        let bytes = own.bytes - old_len.unwrap_or(0) + new_len;
        if bytes > MAX_STATE_BYTES {
            return Err(Error::StateLimit {
                limit: "bytes of values",
                max: MAX_STATE_BYTES,
            });
        }
        own.bytes = bytes;
        own.version += 1;
        let version = own.version;
        let flight = own.keys.get(key).and_then(|v| v.flight);
        if let Some((store, scope)) = &self.store {
            // Queued under the lock: the store keeps the changes in this order.
            let row = crate::store::StateRow {
                key: key.to_owned(),
                origin: own.origin,
                version,
                content_type,
                value: value.clone(),
            };
            let (scope, key, record) = (scope.clone(), key.to_owned(), row.record());
            store.submit(crate::store::Op::State { scope, key, record });
        }
        own.keys.insert(
            key.to_owned(),
            OwnValue {
                version,
                content_type,
                value,
                dirty: true,
                flight,
            },
        );
        Ok(!std::mem::replace(&mut own.told, true))
    }

    /// Driver side: the updates to send now (each key's newest, if none of the key is on
    /// its way). `all`: the channel opened, so this side's origin goes first and then
    /// every value and pending removal again (a peer that restarted has none of them; one
    /// that has them ignores what it holds already).
    pub(crate) fn take_outgoing(&self, all: bool) -> Vec<Outgoing> {
        let mut own = lock(&self.own);
        own.told = false;
        let Own {
            keys,
            next_flight,
            origin,
            ..
        } = &mut *own;
        let mut flight = || {
            let flight = *next_flight;
            *next_flight = (*next_flight + 1) % FLIGHTS;
            flight
        };
        let mut out = Vec::new();
        if all {
            let update = StateUpdate {
                key: String::new(),
                origin: *origin,
                version: 0,
                value: None,
            };
            out.push(Outgoing {
                flight: flight(),
                content_type: ContentType::Json,
                payload: update.encode(),
            });
            for value in keys.values_mut() {
                value.dirty = true;
                value.flight = None;
            }
        }
        for (key, value) in keys.iter_mut() {
            if !value.dirty || value.flight.is_some() {
                continue;
            }
            let number = flight();
            value.dirty = false;
            value.flight = Some((number, value.version));
            let update = StateUpdate {
                key: key.clone(),
                origin: *origin,
                version: value.version,
                value: value.value.clone(),
            };
            out.push(Outgoing {
                flight: number,
                content_type: value.content_type,
                payload: update.encode(),
            });
        }
        out
    }

    /// Driver side: an update could not be handed to the session; it goes again later.
    pub(crate) fn unsent(&self, flight: u32) {
        self.landed(flight, false);
    }

    /// Driver side: the update `flight` was delivered (`true`) or failed. A removal the
    /// peer heard of is forgotten; a failed update goes again with the next batch.
    pub(crate) fn landed(&self, flight: u32, delivered: bool) {
        let mut own = lock(&self.own);
        let Some(key) = own
            .keys
            .iter()
            .find(|(_, v)| v.flight.is_some_and(|(f, _)| f == flight))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(value) = own.keys.get_mut(&key) else {
            return;
        };
        let (_, version) = value.flight.take().unwrap_or((flight, 0));
        if !delivered {
            value.dirty = true;
        } else if value.version == version && value.value.is_none() {
            own.keys.remove(&key);
            if let Some((store, scope)) = &self.store {
                let scope = scope.clone();
                store.submit(crate::store::Op::StateGone { scope, key });
            }
        }
        drop(own);
        self.changed.notify_waiters();
    }

    /// Whether the peer holds every value this side set (none waits or is on its way);
    /// an error once the driver stopped with some still unsent.
    fn synced(&self) -> Option<Result<(), Error>> {
        let own = lock(&self.own);
        let pending = own.keys.values().any(|v| v.dirty || v.flight.is_some());
        match (pending, own.stopped) {
            (false, _) => Some(Ok(())),
            (true, true) => Some(Err(Error::Stopped)),
            (true, false) => None,
        }
    }

    /// Resolves once the peer holds every value this side set (see `synced`).
    pub(crate) async fn wait_synced(&self) -> Result<(), Error> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.synced() {
                return outcome;
            }
            notified.await;
        }
    }

    /// The driver let go of the connection: a waiter for the values to land stops.
    pub(crate) fn stop(&self) {
        lock(&self.own).stopped = true;
        self.changed.notify_waiters();
    }

    /// The peer's update arrived: what changed, key by key, for the app (`None`: the
    /// key is gone). An update from a new origin first drops every value of the old one
    /// (the peer started over); the update itself is applied unless it is older than the
    /// value held or past the bounds.
    pub(crate) fn apply(
        &self,
        content_type: ContentType,
        update: StateUpdate,
    ) -> Vec<(String, Option<Incoming>)> {
        let mut peer = lock(&self.peer);
        let was = peer.origin;
        let changes = Self::apply_to(&mut peer, content_type, update);
        if let Some((store, scope)) = &self.store {
            // With a store the peer's values outlive this process too.
            if peer.origin != was {
                let scope = scope.clone();
                store.submit(crate::store::Op::PeerStateGone { scope });
            }
            for (key, _) in &changes {
                let row = peer.keys.get(key).map(|(version, value)| {
                    let row = crate::store::StateRow {
                        key: key.clone(),
                        origin: peer.origin.unwrap_or_default(),
                        version: *version,
                        content_type: value.content_type,
                        value: Some(value.payload.clone()),
                    };
                    row.record()
                });
                let (scope, key) = (scope.clone(), key.clone());
                store.submit(crate::store::Op::PeerState { scope, key, row });
            }
        }
        changes
    }

    fn apply_to(
        peer: &mut Peer,
        content_type: ContentType,
        update: StateUpdate,
    ) -> Vec<(String, Option<Incoming>)> {
        let mut changes = Vec::new();
        if peer.origin != Some(update.origin) {
            peer.origin = Some(update.origin);
            peer.bytes = 0;
            changes.extend(
                std::mem::take(&mut peer.keys)
                    .into_keys()
                    .map(|k| (k, None)),
            );
        }
        if update.key.is_empty() {
            return changes; // names the origin only
        }
        let held = peer.keys.get(&update.key);
        if held.is_some_and(|(version, _)| *version >= update.version) {
            return changes;
        }
        let old_len = held.map_or(0, |(_, v)| v.payload.len());
        let Some(value) = update.value else {
            if peer.keys.remove(&update.key).is_some() {
                peer.bytes -= old_len;
                changes.push((update.key, None));
            }
            return changes;
        };
        let bytes = peer.bytes - old_len + value.len();
        let new_key = held.is_none();
        if bytes > MAX_STATE_BYTES || (new_key && peer.keys.len() >= MAX_STATE_KEYS) {
            tracing::warn!(key = %update.key, "a state update past the bounds: ignored");
            return changes;
        }
        peer.bytes = bytes;
        let incoming = Incoming {
            content_type,
            payload: value,
            request_id: None,
        };
        peer.keys
            .insert(update.key.clone(), (update.version, incoming.clone()));
        changes.push((update.key, Some(incoming)));
        changes
    }

    /// The peer's value of `key`.
    pub(crate) fn peer(&self, key: &str) -> Option<Incoming> {
        lock(&self.peer).keys.get(key).map(|(_, v)| v.clone())
    }

    /// Every value of the peer's.
    pub(crate) fn peer_all(&self) -> BTreeMap<String, Incoming> {
        let peer = lock(&self.peer);
        peer.keys
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn keys(out: &[Outgoing]) -> Vec<(String, u64, Option<Bytes>)> {
        out.iter()
            .map(|o| {
                let u = StateUpdate::decode(o.payload.clone()).unwrap();
                (u.key, u.version, u.value)
            })
            .collect()
    }

    #[test]
    fn values_set_while_one_is_on_its_way_are_coalesced_to_the_newest() {
        let states = States::default();
        assert!(states.set("hr", ContentType::Json, value("70")).unwrap());
        let first = states.take_outgoing(false);
        assert_eq!(keys(&first), [("hr".into(), 1, value("70"))]);
        assert!(states.set("hr", ContentType::Json, value("71")).unwrap());
        assert!(!states.set("hr", ContentType::Json, value("72")).unwrap());
        assert!(
            states.take_outgoing(false).is_empty(),
            "one per key on its way"
        );
        states.landed(first[0].flight, true);
        assert_eq!(
            keys(&states.take_outgoing(false)),
            [("hr".into(), 3, value("72"))]
        );
    }

    #[test]
    fn an_open_sends_the_origin_then_every_value_and_pending_removal() {
        let states = States::default();
        states.set("a", ContentType::Json, value("1")).unwrap();
        states.set("b", ContentType::Json, value("2")).unwrap();
        let sent = states.take_outgoing(false);
        states.set("b", ContentType::Json, None).unwrap();
        for o in &sent {
            states.landed(o.flight, true);
        }
        let again = keys(&states.take_outgoing(true));
        let expected = [
            (String::new(), 0, None),
            ("a".into(), 1, value("1")),
            ("b".into(), 3, None),
        ];
        assert_eq!(again, expected);
    }

    #[test]
    fn a_failed_update_goes_again_and_a_delivered_removal_is_forgotten() {
        let states = States::default();
        states.set("a", ContentType::Json, value("1")).unwrap();
        let sent = states.take_outgoing(false);
        states.landed(sent[0].flight, false);
        let again = states.take_outgoing(false);
        assert_eq!(keys(&again), [("a".into(), 1, value("1"))]);
        states.landed(again[0].flight, true);
        states.set("a", ContentType::Json, None).unwrap();
        let removal = states.take_outgoing(false);
        assert_eq!(keys(&removal), [("a".into(), 2, None)]);
        states.landed(removal[0].flight, true);
        for i in 0..MAX_STATE_KEYS {
            states
                .set(&format!("k{i}"), ContentType::Json, None)
                .unwrap();
            states
                .set(&format!("k{i}"), ContentType::Json, value("x"))
                .unwrap();
        }
        assert!(matches!(
            states.set("one more", ContentType::Json, value("x")),
            Err(Error::StateLimit { .. })
        ));
    }

    #[test]
    fn bounds_hold_and_nothing_changes_past_them() {
        let states = States::default();
        let big = Some(Bytes::from(vec![b'x'; MAX_STATE_BYTES]));
        states.set("big", ContentType::Binary, big).unwrap();
        let over = states.set("more", ContentType::Binary, value("1"));
        assert!(matches!(over, Err(Error::StateLimit { .. })));
        let long = "k".repeat(MAX_STATE_KEY_LEN + 1);
        assert!(states.set(&long, ContentType::Json, value("1")).is_err());
        assert_eq!(keys(&states.take_outgoing(false)).len(), 1);
    }

    #[test]
    fn a_peer_cannot_grow_the_table_past_its_bounds() {
        let states = States::default();
        let json = ContentType::Json;
        for i in 0..1000u64 {
            let update = StateUpdate {
                key: format!("k{i}"),
                origin: 1,
                version: i + 1,
                value: value("1"),
            };
            states.apply(json, update);
        }
        assert_eq!(
            states.peer_all().len(),
            MAX_STATE_KEYS,
            "keys past the bound ignored"
        );
        // A held key may still change, within the bytes bound and not past it.
        let big = |version, len| StateUpdate {
            key: "k0".into(),
            origin: 1,
            version,
            value: Some(Bytes::from(vec![b'x'; len])),
        };
        let room = MAX_STATE_BYTES - (MAX_STATE_KEYS - 1);
        assert_eq!(states.apply(json, big(2000, room)).len(), 1);
        assert!(
            states.apply(json, big(2001, room + 1)).is_empty(),
            "past the bytes"
        );
        assert_eq!(states.peer("k0").unwrap().payload.len(), room);
    }

    #[test]
    fn the_peer_side_keeps_the_newest_and_drops_an_old_origin() {
        let states = States::default();
        let update = |origin, version, v: Option<Bytes>| StateUpdate {
            key: "hr".into(),
            origin,
            version,
            value: v,
        };
        let json = ContentType::Json;
        assert_eq!(states.apply(json, update(1, 2, value("72"))).len(), 1);
        assert!(
            states.apply(json, update(1, 1, value("70"))).is_empty(),
            "older"
        );
        assert_eq!(states.peer("hr").unwrap().payload, "72");
        let removed = states.apply(json, update(1, 3, None));
        assert_eq!(removed, [("hr".to_string(), None)]);
        assert!(states.peer_all().is_empty());
        states.apply(json, update(1, 4, value("75")));
        // The peer started over: version 1 of a new origin replaces everything.
        let restarted = StateUpdate {
            key: String::new(),
            origin: 9,
            version: 0,
            value: None,
        };
        assert_eq!(states.apply(json, restarted), [("hr".to_string(), None)]);
        assert!(states.peer("hr").is_none());
        assert_eq!(states.apply(json, update(9, 1, value("60"))).len(), 1);
        assert_eq!(states.peer("hr").unwrap().payload, "60");
    }
}
