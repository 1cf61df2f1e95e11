//! An L2CAP credit-based channel on trouble-host, the watch's and the phone's alike: its
//! settings, and the pump between the channel and the link's queues.

use bytes::Bytes;
use embassy_futures::join::join;
use embassy_futures::select::{Either3, Either4, select3, select4};
use trouble_host::prelude::*;

use super::{Ends, Flag, Hci, until_sent};

/// The largest SDU a side can offer: the packet pool's buffer (1024) less the L2CAP and
/// SDU headers; trouble-host reassembles an SDU into one buffer, so it cannot take more.
pub(super) const MAX_SDU_LEN: u16 = 1018;

/// The smallest SDU limit L2CAP allows.
const MIN_SDU_LEN: u16 = 23;

/// K-frames each side may receive ahead: the host's receive queue (64 PDUs).
const INITIAL_CREDITS: u16 = 64;

/// Credits go back in batches of this many, a quarter of the window: one grant per
/// K-frame (the host's default) doubles the packets going the other way.
const GRANT_EVERY: u16 = 16;

/// The channel settings both sides use, taking SDUs of up to `sdu_len` bytes.
pub(super) fn config(sdu_len: u16) -> L2capChannelConfig {
    L2capChannelConfig {
        mtu: Some(sdu_len.clamp(MIN_SDU_LEN, MAX_SDU_LEN)),
        mps: None,
        flow_policy: CreditFlowPolicy::Every(GRANT_EVERY),
        initial_credits: Some(INITIAL_CREDITS),
    }
}

/// Carries SDUs between the channel and the link's queues until the channel ends or a
/// half of the link is dropped; then disconnects the channel.
///
/// No send or receive of the host is ever cancelled: the host writes to the controller
/// inside those futures, and a write dropped halfway leaves half an HCI packet on the
/// transport, which wrecks every connection on it. The loops stop only between
/// operations: the send loop while it waits for the link's next SDU, the receive loop
/// while it waits for room in the link's queue, or when the channel, closed by the send
/// loop or the peer, fails its next receive.
pub(super) async fn pump(
    stack: &Stack<'_, Hci, DefaultPacketPool>,
    channel: L2capChannel<'_, DefaultPacketPool>,
    ends: Ends,
    gone: &Flag,
) {
    let Ends {
        incoming,
        mut outgoing,
    } = ends;
    let mut buf = vec![0u8; usize::from(channel.mtu())];
    let (mut writer, mut reader) = channel.split();
    // Raised when the receive side is done: the channel failed or closed.
    let received_all = Flag::default();
    let receive = async {
        loop {
            match reader.receive(stack, &mut buf).await {
                Ok(len) => {
                    let sdu = Bytes::copy_from_slice(&buf[..len]);
                    // Waiting for room is no host operation: it may stop here.
                    match select3(incoming.send(sdu), gone.wait(), incoming.closed()).await {
                        Either3::First(Ok(())) => {}
                        _ => break,
                    }
                }
                Err(e) => {
                    tracing::debug!(error = ?e, "L2CAP receive ended");
                    break;
                }
            }
        }
        received_all.raise();
    };
    let send = async {
        let ended = loop {
            // The one place this loop waits on anything but the host.
            let next = select4(
                outgoing.recv(),
                received_all.wait(),
                incoming.closed(),
                gone.wait(),
            )
            .await;
            let sdu = match next {
                Either4::First(Some(sdu)) => sdu,
                Either4::First(None) => break "the link's sender was dropped",
                Either4::Second(()) => break "the channel closed",
                Either4::Third(()) => break "the link's receiver was dropped",
                Either4::Fourth(()) => break "the connection ended",
            };
            let sent = until_sent(
                async || writer.send(stack, &sdu[..]).await,
                |e| matches!(e, BleHostError::BleHost(Error::OutOfMemory)),
            )
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = ?e, "L2CAP send failed");
                break "a send failed";
            }
        };
        tracing::debug!(ended, "L2CAP channel done");
        // Fails the receive loop's next receive (a receive waiting for data included).
        writer.disconnect();
    };
    join(receive, send).await;
}
