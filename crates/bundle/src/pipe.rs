//! Hashing beside the copy: SHA-256 runs on its own thread while the caller reads and
//! writes the next chunk, so a bundle is written or read at about the speed of the copy
//! alone. A fixed set of buffers circulates between the two: memory stays bounded.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

use crate::write::hex;

/// The size of one chunk.
pub(crate) const CHUNK: usize = 64 << 10;
/// How many chunks exist (in flight or spare).
const BUFFERS: usize = 16;

enum Msg {
    /// Hash the first `n` bytes, then give the buffer back.
    Data(Vec<u8>, usize),
    /// The file ended: send its digest and start the next.
    Finish,
}

/// The caller's end.
pub(crate) struct HashPipe {
    to: SyncSender<Msg>,
    free: Receiver<Vec<u8>>,
    digests: Receiver<String>,
    spare: Vec<Vec<u8>>,
}

impl HashPipe {
    /// A buffer of [`CHUNK`] bytes to fill (waits for the hasher to return one).
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        match self.spare.pop() {
            Some(b) => b,
            None => self.free.recv().unwrap_or_else(|_| vec![0u8; CHUNK]),
        }
    }

    /// Hashes the first `n` bytes of `buf` (on the hasher's thread).
    pub(crate) fn hash(&mut self, buf: Vec<u8>, n: usize) {
        if let Err(e) = self.to.send(Msg::Data(buf, n)) {
            // The hasher is gone (it cannot be, short of a panic): keep the buffer.
            if let Msg::Data(buf, _) = e.0 {
                self.spare.push(buf);
            }
        }
    }

    /// The digest of everything hashed since the last `finish`.
    pub(crate) fn finish(&mut self) -> String {
        let _ = self.to.send(Msg::Finish);
        self.digests.recv().unwrap_or_default()
    }
}

/// Runs `f` with a hasher thread beside it.
pub(crate) fn with_hasher<R>(f: impl FnOnce(&mut HashPipe) -> R) -> R {
    let (to, from) = sync_channel::<Msg>(BUFFERS);
    let (give_back, free) = sync_channel::<Vec<u8>>(BUFFERS);
    let (send_digest, digests) = sync_channel::<String>(1);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut hasher = Sha256::new();
            for msg in from {
                match msg {
                    Msg::Data(buf, n) => {
                        hasher.update(&buf[..n]);
                        if give_back.send(buf).is_err() {
                            return;
                        }
                    }
                    Msg::Finish => {
                        let digest = hex(&std::mem::take(&mut hasher).finalize());
                        if send_digest.send(digest).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut pipe = HashPipe { to, free, digests, spare: (0..BUFFERS).map(|_| vec![0u8; CHUNK]).collect() };
        f(&mut pipe)
        // `pipe` is dropped here: the hasher's channel closes and its thread ends.
    })
}
