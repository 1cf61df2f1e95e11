//! An L2CAP credit-based channel on trouble-host, the watch's and the phone's alike: its
//! settings, and the pump between the channel and the link's queues.

use bytes::Bytes;
use embassy_futures::select::select3;
use tokio::sync::mpsc;
use trouble_host::prelude::*;

use super::{Ends, Hci, until_sent};

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
pub(super) async fn pump(
    stack: &Stack<'_, Hci, DefaultPacketPool>,
    channel: L2capChannel<'_, DefaultPacketPool>,
    ends: Ends,
) {
    let Ends {
        incoming,
        mut outgoing,
    } = ends;
    let mut buf = vec![0u8; usize::from(channel.mtu())];
    let (mut writer, mut reader) = channel.split();
    let receive = async {
        loop {
            match reader.receive(stack, &mut buf).await {
                Ok(len) => {
                    if incoming
                        .send(Bytes::copy_from_slice(&buf[..len]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = ?e, "L2CAP receive ended");
                    return;
                }
            }
        }
    };
    let send = async {
        while let Some(sdu) = outgoing.recv().await {
            let sent = until_sent(
                async || writer.send(stack, &sdu[..]).await,
                |e| matches!(e, BleHostError::BleHost(Error::OutOfMemory)),
            )
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = ?e, "L2CAP send failed");
                return;
            }
        }
    };
    // Either half of the link dropped ends the channel.
    select3(receive, send, closed(&incoming)).await;
    reader.disconnect();
}

async fn closed(incoming: &mpsc::Sender<Bytes>) {
    incoming.closed().await
}
