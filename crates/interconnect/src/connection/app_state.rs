//! The connection's app state API (see `crate::app_state`): setting this side's values,
//! reading the peer's.

use std::collections::BTreeMap;

use bytes::Bytes;
use interconnect_proto::ContentType;

use crate::command::Command;
use crate::error::{Cause, Error};
use crate::state::Incoming;

impl super::Connection {
    /// Sets the state `key` to `value`, as JSON (the peer mirrors this side's state;
    /// [`ConnectionEvent::State`](crate::ConnectionEvent::State) tells its app). Returns
    /// at once: the newest value of each key reaches the peer, over this link or the next
    /// one; values set while the link is down, or while an older value of the key is on
    /// its way, are coalesced into the newest. Setting the same value again sends it
    /// again, as a new version.
    ///
    /// Bounded per connection: [`MAX_STATE_KEYS`](crate::MAX_STATE_KEYS) keys,
    /// [`MAX_STATE_BYTES`](crate::MAX_STATE_BYTES) of values,
    /// keys of at most 128 bytes; past them this fails with [`Error::StateLimit`] and
    /// nothing changes. A peer that reads no state (an earlier release) is told nothing:
    /// the connection's events carry one `Error` saying so.
    ///
    /// Without a store the state lives in this process: a side that restarts starts
    /// with none, and its peer drops what it held of the old state when the channel
    /// opens again. With one ([`Config::store`](crate::Config::store)) each change is kept
    /// there too: a restarted side holds its values under the same origin, sends them
    /// again, and its peer keeps what it holds.
    ///
    /// ```no_run
    /// # fn f(conn: interconnect::Connection) -> Result<(), interconnect::Error> {
    /// conn.set_state("heart-rate", &72)?;
    /// conn.set_state("workout", &serde_json::json!({ "kind": "run", "km": 3.2 }))?;
    /// conn.remove_state("workout")?;
    /// # Ok(()) }
    /// ```
    pub fn set_state<T: serde::Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::Serialization(Cause::new(e.to_string(), e)))?;
        self.set_state_bytes(key, ContentType::Json, Bytes::from(json))
    }

    /// Sets the state `key` to raw bytes with a content type; as
    /// [`set_state`](Self::set_state).
    pub fn set_state_bytes(
        &self,
        key: &str,
        content_type: ContentType,
        value: Bytes,
    ) -> Result<(), Error> {
        self.change_state(key, content_type, Some(value))
    }

    /// Removes the state `key`: the peer's copy goes too (its app gets a `State` event
    /// with no value). Removing a key never set does nothing.
    pub fn remove_state(&self, key: &str) -> Result<(), Error> {
        self.change_state(key, ContentType::Json, None)
    }

    fn change_state(
        &self,
        key: &str,
        content_type: ContentType,
        value: Option<Bytes>,
    ) -> Result<(), Error> {
        let shared = &self.shared;
        if shared.states.set(key, content_type, value)? {
            let tell = Command::States { key: shared.key };
            shared.commands.send(tell).map_err(|_| Error::Stopped)?;
        }
        Ok(())
    }

    /// Resolves once the peer holds every value this side set (none waits for a link or
    /// is on its way; with the default [`Acknowledge::WhenTaken`](crate::Acknowledge), once
    /// the peer's app took each `State` event): for an app that must know its state
    /// arrived before it exits, say.
    /// A value set meanwhile must arrive too. Each time the channel opens every value
    /// goes again, so this waits for that as well. It never resolves for a peer that
    /// reads no state: bound it with `tokio::time::timeout`. Fails with
    /// [`Error::Stopped`] once the endpoint stopped with values unsent.
    pub async fn state_synced(&self) -> Result<(), Error> {
        self.shared.states.wait_synced().await
    }

    /// The peer's value of the state `key`, if it set one (see
    /// [`set_state`](Self::set_state)). Decode it with [`Incoming::decode`].
    pub fn peer_state(&self, key: &str) -> Option<Incoming> {
        self.shared.states.peer(key)
    }

    /// Every state value the peer set, by key.
    pub fn peer_states(&self) -> BTreeMap<String, Incoming> {
        self.shared.states.peer_all()
    }
}
