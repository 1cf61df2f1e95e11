//! File transfers: outgoing files read by a reader task, incoming ones written by a writer
//! task, their offers, progress and outcomes.

use interconnect_proto::{ChannelId, Code, TransferId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Command, Driver};
use crate::error::Error;
use crate::files::{self, IoDone, Offer, WriterCmd};
use crate::sans_io::Event;
use crate::state::{ConnectionEvent, Progress};

/// An outgoing file, from `send_file` until the receiver's verdict.
pub(super) struct OutFile {
    pub(super) key: u64,
    pub(super) ticket: u64,
    /// Read requests to this transfer's reader, which answers them in order.
    pub(super) reader: Option<mpsc::UnboundedSender<(u64, u64)>>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) done: oneshot::Sender<Result<(), Error>>,
    pub(super) started: Instant,
    /// The app's metadata about the file, offered with it.
    pub(super) meta: bytes::Bytes,
}

/// An incoming file reports its progress to the app each time this much more is written.
pub(super) const PROGRESS_STEP: u64 = 1 << 20;

/// An offer admitted (within the count and size limits), before its partial file is
/// claimed.
pub(super) struct Admitted {
    pub(super) offer: Offer,
    /// The partial of this transfer's earlier writer, offered again after a link drop.
    pub(super) resumes: Option<std::path::PathBuf>,
}

/// An offer whose partial file is being claimed.
pub(super) struct Claiming {
    offer: Offer,
    /// Cleared when the offer is dropped meanwhile: the claim is then let go.
    wanted: bool,
}

/// An incoming file being written.
pub(super) struct Receiving {
    /// Tells this writer's reports apart (see `IoDone::Written`).
    pub(super) ticket: u64,
    pub(super) commands: mpsc::UnboundedSender<WriterCmd>,
    /// The partial file it owns.
    pub(super) part: std::path::PathBuf,
    /// Bytes written so far.
    pub(super) written: u64,
    /// The file's size.
    pub(super) size: u64,
}

impl Receiving {
    /// Bytes still to come, reserved on the disk against other offers.
    pub(super) fn left(&self) -> u64 {
        self.size.saturating_sub(self.written)
    }
}

pub(super) fn cancelled() -> Error {
    Error::Transfer {
        code: Code::CANCELLED,
        reason: "cancelled by the sender".into(),
    }
}

impl Driver {
    /// An offer: `(name, size, modified, meta)` as the sender gave them.
    pub(super) fn on_file_offered(
        &mut self,
        channel: ChannelId,
        transfer: TransferId,
        (name, size, modified, meta): (String, u64, u64, bytes::Bytes),
    ) {
        if self.files.is_none() {
            return self.session.reject_file(
                channel,
                transfer,
                Code::OTHERS,
                "this device does not accept files",
            );
        };
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let offer = Offer {
            ticket,
            channel,
            transfer,
            package: self
                .session
                .channel_package(channel)
                .unwrap_or_default()
                .to_string(),
            name,
            size,
            modified,
            meta,
            target: None,
            sender: self.session.peer_token().unwrap_or_default(),
        };
        // Offered again after a link drop: the earlier writer's partial, once it let go;
        // an earlier offer of it not yet claimed is replaced.
        self.forget_offer(channel, transfer);
        let resumes = self
            .writers
            .remove(&(channel, transfer))
            .map(|receiving| receiving.part);
        let others = self.writers.len()
            + self.offers.len()
            + self.asking.len()
            + self.claiming.iter().count();
        let admitted = match &self.files {
            Some(config) => files::admit(config, size, others, resumes.is_some()),
            None => return,
        };
        if let Err(refusal) = admitted {
            return self.refuse_offer(channel, transfer, refusal);
        }
        let admitted = Admitted { offer, resumes };
        // A resumed transfer was accepted before: it is not asked about again.
        match self.files.as_ref().and_then(|f| f.ask) {
            Some(wait) if admitted.resumes.is_none() => self.ask(admitted, wait),
            _ => {
                self.offers.push_back(admitted);
                self.claim_next();
            }
        }
    }

    /// Starts claiming the next admitted offer's partial file on a blocking thread,
    /// unless a claim is under way: claims run one at a time, so each sees every partial
    /// the ones before it took.
    pub(super) fn claim_next(&mut self) {
        if self.claiming.is_some() {
            return;
        }
        let (Some(config), Some(next)) = (&self.files, self.offers.pop_front()) else {
            return;
        };
        let config = config.clone();
        let others = files::InProgress {
            count: self.writers.len(),
            bytes: self.writers.values().map(Receiving::left).sum(),
        };
        let live: Vec<_> = self.writers.values().map(|r| r.part.clone()).collect();
        let offer = next.offer.clone();
        let io = self.io_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = files::claim_partial(&config, &offer, next.resumes, &live, others);
            if let Err(IoDone::Claimed {
                result: Ok(claim), ..
            }) = io.send(IoDone::Claimed {
                ticket: offer.ticket,
                result,
            }) {
                files::release(claim);
            }
        });
        self.claiming = Some(Claiming {
            offer: next.offer,
            wanted: true,
        });
    }

    /// A claim ended: the offer is accepted from where its partial file stands and its
    /// writer started, or refused.
    fn on_claimed(&mut self, ticket: u64, result: Result<files::Claim, files::Refusal>) {
        let Some(claiming) = self.claiming.take_if(|c| c.offer.ticket == ticket) else {
            return;
        };
        let (channel, transfer) = (claiming.offer.channel, claiming.offer.transfer);
        match (result, &self.files) {
            (Ok(claim), Some(config)) if claiming.wanted => {
                let size = claiming.offer.size;
                let meta = claiming.offer.meta.clone();
                let incoming =
                    files::start_writer(config, claiming.offer, claim, self.io_tx.clone());
                self.session.accept_file(channel, transfer, incoming.offset);
                self.writers.insert(
                    (channel, transfer),
                    Receiving {
                        ticket,
                        commands: incoming.writer,
                        part: incoming.part,
                        written: incoming.offset,
                        size,
                    },
                );
                self.emit(
                    channel,
                    ConnectionEvent::FileIncoming {
                        transfer: transfer.0,
                        name: incoming.name,
                        size,
                        offset: incoming.offset,
                        meta,
                    },
                );
            }
            (Ok(claim), _) => {
                tokio::task::spawn_blocking(move || files::release(claim));
            }
            (Err(refusal), _) if claiming.wanted => self.refuse_offer(channel, transfer, refusal),
            (Err(_), _) => {}
        }
        self.claim_next();
    }

    fn refuse_offer(&mut self, channel: ChannelId, transfer: TransferId, refusal: files::Refusal) {
        self.session
            .reject_file(channel, transfer, refusal.code, &refusal.reason);
        if refusal.code == Code::ALREADY_STORED {
            // Not a failure: the app has the file (and was told when it was stored).
            return;
        }
        self.emit(
            channel,
            ConnectionEvent::Error {
                code: refusal.code,
                message: refusal.reason,
            },
        );
    }

    /// Drops an offer not yet accepted (the sender gave it up, or offered it again); a
    /// claim under way for it is let go when it ends.
    pub(super) fn forget_offer(&mut self, channel: ChannelId, transfer: TransferId) {
        let is = |o: &Offer| o.channel == channel && o.transfer == transfer;
        self.offers.retain(|a| !is(&a.offer));
        self.forget_asking(channel, transfer);
        if let Some(claiming) = &mut self.claiming
            && is(&claiming.offer)
        {
            claiming.wanted = false;
        }
    }

    /// Drops every offer not yet accepted (the driver stops).
    pub(super) fn forget_offers(&mut self) {
        self.offers.clear();
        self.asking.clear();
        if let Some(claiming) = &mut self.claiming {
            claiming.wanted = false;
        }
    }

    pub(super) fn on_io(&mut self, done: IoDone) {
        match done {
            IoDone::Claimed { ticket, result } => self.on_claimed(ticket, result),
            IoDone::Pinned {
                fingerprint,
                result,
            } => self.on_pinned(fingerprint, result),
            IoDone::Prepared { ticket, result } => {
                let Some(mut out) = self.preparing.remove(&ticket) else {
                    return;
                };
                let prepared = match result {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        let _ = out
                            .done
                            .send(Err(Error::Io(crate::error::Cause::new(e.to_string(), e))));
                        return;
                    }
                };
                let Some(channel) = self.conns.get(&out.key).and_then(|e| e.channel) else {
                    let _ = out.done.send(Err(Error::ConnectionLost));
                    return;
                };
                match self.session.send_file_with_meta(
                    self.clock.now(),
                    channel,
                    &prepared.name,
                    prepared.size,
                    prepared.modified,
                    std::mem::take(&mut out.meta),
                ) {
                    Ok(transfer) => {
                        out.progress.send_modify(|p| p.total = prepared.size);
                        out.reader =
                            Some(files::spawn_reader(prepared, transfer, self.io_tx.clone()));
                        out.started = Instant::now();
                        self.outgoing_files.insert(transfer, out);
                    }
                    Err(error) => {
                        let _ = out.done.send(Err(error.into()));
                    }
                }
            }
            IoDone::Read {
                transfer,
                offset,
                result,
            } => match result {
                Ok(read) if read.with_room => {
                    self.session
                        .file_read_with_room(transfer, offset, read.bytes, read.digest);
                }
                Ok(read) => self
                    .session
                    .file_read(transfer, offset, read.bytes, read.digest),
                Err(e) => {
                    let channel = self.outgoing_transfer_channel(transfer);
                    let reason = format!("cannot read the file: {e}");
                    if let Some(channel) = channel {
                        self.session
                            .cancel_file(channel, transfer, Code::STORAGE, &reason);
                    }
                    if let Some(out) = self.outgoing_files.remove(&transfer) {
                        // `Error::Io` says "cannot read the file" itself.
                        let _ = out
                            .done
                            .send(Err(Error::Io(crate::error::Cause::new(e.to_string(), e))));
                    }
                }
            },
            IoDone::Written {
                ticket,
                channel,
                transfer,
                end,
            } => {
                if self.is_current_writer(ticket, channel, transfer) {
                    let mut progress = None;
                    if let Some(receiving) = self.writers.get_mut(&(channel, transfer)) {
                        // One progress event per `PROGRESS_STEP` written (the stored
                        // file's own event ends it).
                        let step = |n: u64| n / PROGRESS_STEP;
                        if step(end) > step(receiving.written) && end < receiving.size {
                            progress = Some(ConnectionEvent::FileProgress {
                                transfer: transfer.0,
                                bytes_done: end,
                                total: receiving.size,
                            });
                        }
                        receiving.written = end;
                    }
                    if let Some(event) = progress {
                        self.emit(channel, event);
                    }
                    self.session.file_written(channel, transfer, end);
                }
            }
            IoDone::Stored {
                ticket,
                channel,
                transfer,
                path,
                name,
                size,
            } => {
                if !self.is_current_writer(ticket, channel, transfer) {
                    // Finished just as its sender went away; the channel id may belong
                    // to another app now, so no event: the file is in the folder.
                    tracing::info!(path = %path.display(), "stored a file whose sender had gone");
                    return;
                }
                self.writers.remove(&(channel, transfer));
                self.session.file_stored(channel, transfer);
                self.emit(
                    channel,
                    ConnectionEvent::File {
                        transfer: transfer.0,
                        path,
                        name,
                        size,
                    },
                );
            }
            IoDone::Failed {
                ticket,
                channel,
                transfer,
                code,
                reason,
            } => {
                if !self.is_current_writer(ticket, channel, transfer) {
                    // An abandoned transfer's writer: its sender is gone, and a transfer
                    // now using the same ids is not this one.
                    tracing::debug!(%code, %reason, "abandoned incoming file failed");
                    return;
                }
                self.writers.remove(&(channel, transfer));
                self.session.cancel_file(channel, transfer, code, &reason);
                self.emit(
                    channel,
                    ConnectionEvent::Error {
                        code,
                        message: reason,
                    },
                );
            }
        }
    }

    pub(super) fn is_current_writer(
        &self,
        ticket: u64,
        channel: ChannelId,
        transfer: TransferId,
    ) -> bool {
        self.writers
            .get(&(channel, transfer))
            .is_some_and(|receiving| receiving.ticket == ticket)
    }

    pub(super) fn outgoing_transfer_channel(&self, transfer: TransferId) -> Option<ChannelId> {
        let key = self.outgoing_files.get(&transfer)?.key;
        self.conns.get(&key)?.channel
    }

    /// The session's file events: reads for outgoing files, data for incoming ones,
    /// progress and outcomes.
    pub(super) fn on_file_event(&mut self, event: Event) {
        match event {
            Event::FileRead {
                transfer,
                offset,
                len,
                ..
            } => {
                if let Some(reader) = self
                    .outgoing_files
                    .get(&transfer)
                    .and_then(|o| o.reader.as_ref())
                {
                    let _ = reader.send((offset, len));
                }
            }
            Event::FileProgress {
                transfer, offset, ..
            } => {
                if let Some(out) = self.outgoing_files.get(&transfer) {
                    let elapsed = out.started.elapsed().as_secs_f64();
                    out.progress.send_modify(|p| {
                        p.bytes_done = offset;
                        p.rate = if elapsed > 0.0 {
                            offset as f64 / elapsed
                        } else {
                            0.0
                        };
                    });
                }
            }
            Event::FileSent { transfer, .. } => {
                if let Some(out) = self.outgoing_files.remove(&transfer) {
                    out.progress.send_modify(|p| p.bytes_done = p.total);
                    let _ = out.done.send(Ok(()));
                }
            }
            Event::FileFailed {
                channel,
                transfer,
                outgoing,
                code,
                reason,
            } => {
                if outgoing {
                    if let Some(out) = self.outgoing_files.remove(&transfer) {
                        // The peer has this very file already: delivered.
                        let outcome = if code == Code::ALREADY_STORED {
                            out.progress.send_modify(|p| p.bytes_done = p.total);
                            Ok(())
                        } else {
                            Err(Error::Transfer { code, reason })
                        };
                        let _ = out.done.send(outcome);
                    }
                } else {
                    // The error reaches the app once the partial file is gone: the
                    // writer reports `Failed`, and stays listed until then so the report
                    // is known for its own.
                    let abort = WriterCmd::Abort {
                        remove: true,
                        failure: Some((code, reason)),
                    };
                    self.forget_offer(channel, transfer);
                    let unsent = match self.writers.get(&(channel, transfer)) {
                        Some(receiving) => receiving.commands.send(abort).err().map(|e| e.0),
                        None => Some(abort),
                    };
                    if let Some(WriterCmd::Abort {
                        failure: Some((code, message)),
                        ..
                    }) = unsent
                    {
                        self.writers.remove(&(channel, transfer));
                        self.emit(channel, ConnectionEvent::Error { code, message });
                    }
                }
            }
            Event::FileOffered {
                channel,
                transfer,
                name,
                size,
                modified,
                meta,
            } => {
                let offer = (name, size, modified, meta);
                self.on_file_offered(channel, transfer, offer);
            }
            Event::FileData {
                channel,
                transfer,
                offset,
                data,
                digest,
            } => {
                if let Some(receiving) = self.writers.get(&(channel, transfer)) {
                    let _ = receiving
                        .commands
                        .send(WriterCmd::Data(offset, data, digest));
                }
            }
            Event::FileAbandoned { channel, transfer } => {
                self.forget_offer(channel, transfer);
                if let Some(receiving) = self.writers.remove(&(channel, transfer)) {
                    let _ = receiving.commands.send(WriterCmd::Abort {
                        remove: false,
                        failure: None,
                    });
                }
            }
            _ => {}
        }
    }

    /// A handle's file commands: send, cancel an outgoing or an incoming file.
    pub(super) fn on_file_command(&mut self, command: Command) {
        match command {
            Command::SendFile {
                key,
                ticket,
                path,
                meta,
                progress,
                done,
            } => {
                self.preparing.insert(
                    ticket,
                    OutFile {
                        key,
                        ticket,
                        reader: None,
                        progress,
                        done,
                        started: Instant::now(),
                        meta,
                    },
                );
                let io = self.io_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = files::prepare(&path);
                    let _ = io.send(IoDone::Prepared { ticket, result });
                });
            }
            Command::CancelFile { key, ticket } => {
                if let Some(out) = self.preparing.remove(&ticket) {
                    let _ = out.done.send(Err(cancelled()));
                    return;
                }
                let found = self
                    .outgoing_files
                    .iter()
                    .find(|(_, o)| o.key == key && o.ticket == ticket)
                    .map(|(t, _)| *t);
                if let Some(transfer) = found {
                    if let Some(channel) = self.outgoing_transfer_channel(transfer) {
                        self.session.cancel_file(
                            channel,
                            transfer,
                            Code::CANCELLED,
                            "cancelled by the sender",
                        );
                    }
                    if let Some(out) = self.outgoing_files.remove(&transfer) {
                        let _ = out.done.send(Err(cancelled()));
                    }
                }
            }
            Command::DecideFile {
                key,
                transfer,
                decision,
            } => self.on_decision(key, transfer, decision),
            Command::CancelIncoming { key, transfer } => {
                let Some(channel) = self.conns.get(&key).and_then(|e| e.channel) else {
                    return;
                };
                let transfer = TransferId(transfer);
                self.session.cancel_file(
                    channel,
                    transfer,
                    Code::CANCELLED,
                    "cancelled by the receiver",
                );
                self.forget_offer(channel, transfer);
                if let Some(receiving) = self.writers.remove(&(channel, transfer)) {
                    let _ = receiving.commands.send(WriterCmd::Abort {
                        remove: true,
                        failure: None,
                    });
                }
            }
            _ => {}
        }
    }
}
