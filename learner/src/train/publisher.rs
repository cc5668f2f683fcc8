//! The publisher: the one owner of the policy version.
//!
//! Each version's weights are serialized once and sent through a
//! `tokio::sync::watch`; every reader (the gRPC subscriptions, the ingest
//! gate's lag check, the progress line) borrows the newest [`Snapshot`] from
//! it, so the version lives in exactly one place.

use std::sync::Arc;

use bytes::Bytes;
use flotilla_common::metrics as m;
use flotilla_common::Snapshot;
use tokio::sync::watch;

/// Publishes policy versions.
pub struct Publisher {
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Publisher {
    /// Publishes `safetensors` (see [`crate::train::learn::Learning::snapshot`])
    /// as `version` (the run's first snapshot).
    pub fn new(safetensors: Vec<u8>, version: u64) -> Self {
        let (tx, _) = watch::channel(Arc::new(snapshot(safetensors, version)));
        metrics::gauge!(m::POLICY_VERSION).set(version as f64);
        Publisher { tx }
    }

    /// The newest version.
    pub fn version(&self) -> u64 {
        self.tx.borrow().version
    }

    /// A reader of the newest snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// `safetensors` as the next version, to be [`Publisher::publish`]ed.
    pub fn next(&self, safetensors: Vec<u8>) -> Snapshot {
        snapshot(safetensors, self.version() + 1)
    }

    /// Makes `snapshot` the newest version for every reader.
    pub fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        // send_replace never fails, even with no subscriber.
        self.tx.send_replace(Arc::new(snapshot));
        metrics::gauge!(m::POLICY_VERSION).set(version as f64);
    }
}

fn snapshot(safetensors: Vec<u8>, version: u64) -> Snapshot {
    Snapshot {
        version,
        safetensors: Bytes::from(safetensors),
    }
}
