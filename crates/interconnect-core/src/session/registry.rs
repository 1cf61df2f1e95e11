//! The phone's app registry (registrations, attach and detach, version queries) and the
//! messages it holds for a watch that went away, by (package, device).

#[allow(unused_imports)]
use crate::prelude::*;

use interconnect_proto::{ChannelId, Code, Frame, Role, VersionQuery, VersionReply};

use super::{AppEntry, CommandError, Owner, Session};

use crate::channel::{ChannelState, Outgoing};
use crate::event::Event;

impl Session {
    /// Watch side: asks which version of `package` the phone has registered. The answer
    /// arrives as [`Event::VersionReply`] with the returned id. Needs the link up.
    pub fn query_version(&mut self, package: &str) -> Result<u32, CommandError> {
        if self.config.role == Role::Phone {
            // Apps register on the phone; a watch has none to report.
            return Err(CommandError::WrongRole(Role::Phone));
        }
        if !self.is_link_up() {
            return Err(CommandError::ChannelClosed);
        }
        let request = self.next_query;
        self.next_query = self.next_query.wrapping_add(1);
        self.control.push_back(Frame::VersionQuery(VersionQuery {
            request,
            package: package.into(),
        }));
        Ok(request)
    }

    /// Phone side: whether the watch restarted and has not opened `package` again
    /// yet. The app's sends wait for that open rather than fail.
    pub fn awaits_reopen(&self, package: &str) -> bool {
        // Asked on every send: the common case (no orphans) builds no range key.
        !self.orphans.is_empty() && self.orphans_of(package).next().is_some()
    }

    /// The orphan entries of `package`, whichever device they were for.
    pub(super) fn orphans_of(&self, package: &str) -> impl Iterator<Item = &(String, Owner)> {
        self.orphans
            .range((package.to_string(), Owner::default())..)
            .map(|(key, _)| key)
            .take_while(move |(p, _)| p == package)
    }

    /// Takes the orphans of `package`: those held for `owner` are returned, in the
    /// order they were sent; those held for any other device fail with `code`.
    pub(super) fn take_orphans(
        &mut self,
        package: &str,
        owner: Option<Owner>,
        code: Code,
    ) -> Vec<Outgoing> {
        let keys: Vec<(String, Owner)> = self.orphans_of(package).cloned().collect();
        let mut mine = Vec::new();
        for key in keys {
            let Some(orphans) = self.orphans.remove(&key) else {
                continue;
            };
            if Some(key.1) == owner {
                mine.extend(orphans.into_iter().map(|(_, m)| m));
            } else {
                for (channel, message) in orphans {
                    self.events
                        .push_back(Event::SendFailed(channel, message.id, code));
                }
            }
        }
        mine
    }

    /// Phone side: registers (or updates) an app, attached.
    ///
    /// A registration that replaces another (the package reinstalled, or another app
    /// claiming it) closes the package's channels: with 1007 where the watch asked for a
    /// signature the new registration does not have, else with 1002. The watch opens
    /// again, and that open is checked against the new registration like any other, so a
    /// channel never passes from one registration to the next unchecked.
    pub fn register_app(&mut self, package: &str, version: u32, signature: Option<&str>) {
        if self.apps.contains_key(package) {
            let open: Vec<(ChannelId, Option<String>)> = self
                .channels
                .values()
                .filter(|c| c.package == package && c.state() != ChannelState::Closed)
                .map(|c| (c.id, c.signature.clone()))
                .collect();
            for (id, wanted) in open {
                match wanted {
                    Some(wanted) if signature != Some(wanted.as_str()) => self.close(
                        id,
                        Code::SIGNATURE_MISMATCH,
                        "the app registered again with another signature",
                    ),
                    _ => self.close(id, Code::APP_NOT_CONNECTED, "the app registered again"),
                }
            }
            self.take_orphans(package, None, Code::CONNECTION_LOST);
        }
        self.apps.insert(
            package.into(),
            AppEntry {
                version,
                signature: signature.map(Into::into),
                attached: true,
            },
        );
    }

    /// Phone side: marks a registered app attached or detached. Detaching closes its
    /// channels with 1002.
    pub fn set_app_attached(&mut self, package: &str, attached: bool) {
        if let Some(app) = self.apps.get_mut(package) {
            app.attached = attached;
        }
        if !attached {
            self.take_orphans(package, None, Code::CONNECTION_LOST);
            let ids: Vec<ChannelId> = self
                .channels
                .values()
                .filter(|c| c.package == package && c.state() != ChannelState::Closed)
                .map(|c| c.id)
                .collect();
            for id in ids {
                self.close(id, Code::APP_NOT_CONNECTED, "app detached");
            }
        }
    }

    /// Phone side: removes an app; its channels close with 1001.
    pub fn unregister_app(&mut self, package: &str) {
        self.set_app_attached(package, false);
        self.apps.remove(package);
    }

    /// The peer started a new logical session (or another device came in its place):
    /// what it held of ours is gone. `previous` is the device the channels were for.
    pub(super) fn forget_peer_state(&mut self, previous: Owner) {
        match self.config.role {
            Role::Watch => {
                for ch in self.channels.values_mut() {
                    if ch.state() != ChannelState::Closed {
                        ch.restart();
                    }
                }
            }
            Role::Phone => {
                let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
                for id in ids {
                    if let Some(mut ch) = self.channels.remove(&id) {
                        // The app's sends wait for the watch to open the package again.
                        let orphans = self
                            .orphans
                            .entry((ch.package.clone(), previous))
                            .or_default();
                        orphans.extend(ch.take_unacknowledged().into_iter().map(|m| (id, m)));
                    }
                    // A watch that restarted may offer the same file again: keep
                    // what arrived of it.
                    self.abandon_incoming(id);
                    self.files_on_channel_closed(id, Code::CONNECTION_LOST);
                }
            }
        }
    }

    pub(super) fn on_version_query(&mut self, query: VersionQuery) {
        let version = match self.config.role {
            Role::Phone => self.apps.get(&query.package).map(|a| a.version),
            Role::Watch => None,
        };
        self.control.push_back(Frame::VersionReply(VersionReply {
            request: query.request,
            version,
        }));
    }
}
