//! Offers the receiving app decides on (`FilesConfig::ask`): an offer within the limits
//! waits for the app's answer, or for its time to run out (then it is accepted), before
//! its partial file is claimed. They count against `max_incoming` like files being
//! written.

use interconnect_proto::{ChannelId, TransferId};
use tokio::time::Instant;

use super::Driver;
use super::transfers::Admitted;
use crate::command::FileDecision;
use crate::state::ConnectionEvent;

/// An offer waiting for the app's answer.
pub(super) struct Asking {
    pub(super) admitted: Admitted,
    /// When it is accepted unanswered.
    pub(super) deadline: Instant,
}

impl Driver {
    /// Asks the app about an admitted offer.
    pub(super) fn ask(&mut self, admitted: Admitted, wait: std::time::Duration) {
        let offer = &admitted.offer;
        let (channel, transfer) = (offer.channel, offer.transfer);
        let event = ConnectionEvent::FileOffered {
            transfer: transfer.0,
            name: offer.name.clone(),
            size: offer.size,
            meta: offer.meta.clone(),
        };
        self.asking.push(Asking {
            admitted,
            deadline: Instant::now() + wait,
        });
        self.emit(channel, event);
    }

    /// The app answered (an offer no longer waiting is left as it is).
    pub(super) fn on_decision(&mut self, key: u64, transfer: u32, decision: FileDecision) {
        let Some(channel) = self.conns.get(&key).and_then(|e| e.channel) else {
            return;
        };
        let transfer = TransferId(transfer);
        let Some(i) = self.asking.iter().position(|a| {
            a.admitted.offer.channel == channel && a.admitted.offer.transfer == transfer
        }) else {
            return;
        };
        let Asking { mut admitted, .. } = self.asking.remove(i);
        match decision {
            FileDecision::Accept(target) => {
                admitted.offer.target = target;
                self.offers.push_back(admitted);
                self.claim_next();
            }
            FileDecision::Reject { code, reason } => {
                tracing::debug!(transfer = transfer.0, %code, "the app refused a file");
                self.session.reject_file(channel, transfer, code, &reason);
            }
        }
    }

    /// When the first offer waiting for the app is accepted unanswered.
    pub(super) fn asking_deadline(&self) -> Option<Instant> {
        self.asking.iter().map(|a| a.deadline).min()
    }

    /// Accepts the offers whose time for an answer ran out.
    pub(super) fn on_asking_timeout(&mut self) {
        let now = Instant::now();
        let (due, waiting) = std::mem::take(&mut self.asking)
            .into_iter()
            .partition(|a| a.deadline <= now);
        self.asking = waiting;
        let due: Vec<Asking> = due;
        if due.is_empty() {
            return;
        }
        for asking in due {
            tracing::debug!(
                transfer = asking.admitted.offer.transfer.0,
                "no answer: accepted"
            );
            self.offers.push_back(asking.admitted);
        }
        self.claim_next();
    }

    /// Drops a waiting offer (the sender gave it up, or offered it again).
    pub(super) fn forget_asking(&mut self, channel: ChannelId, transfer: TransferId) {
        self.asking.retain(|a| {
            !(a.admitted.offer.channel == channel && a.admitted.offer.transfer == transfer)
        });
    }
}
