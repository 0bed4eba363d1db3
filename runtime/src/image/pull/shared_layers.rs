//! Layers being fetched by some pull, so that two pulls of different images that share a layer
//! download it once: the first pull to need a layer (a chain ID) claims it; a later pull that
//! needs it too waits until the first has committed it (or given up), and downloads it itself
//! only if it is still missing then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::image::reference::Digest;

/// The layers claimed by running pulls, each with the signal its claim ends with.
#[derive(Default)]
pub(crate) struct LayersInFlight {
    claimed: Mutex<HashMap<Digest, watch::Receiver<()>>>,
}

/// One pull's claim on the layers it fetches; dropped when its layers are committed (or it
/// failed), which wakes every pull waiting for them.
pub(crate) struct Claim {
    flight: Arc<LayersInFlight>,
    chains: Vec<Digest>,
    signal: watch::Sender<()>,
}

/// How a pull gets one layer it misses.
pub(crate) enum Fetch {
    /// It downloads the layer itself.
    Own,
    /// Another pull downloads it: wait for the end of that pull's claim, then look again.
    After(watch::Receiver<()>),
}

impl LayersInFlight {
    /// Claims those of `chains` that no other pull claims; says for each whether it is ours.
    pub(crate) fn claim(self: &Arc<Self>, chains: &[Digest]) -> (Claim, Vec<Fetch>) {
        let (signal, receiver) = watch::channel(());
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        let mut ours = Vec::new();
        let fetches = chains
            .iter()
            .map(|chain| match claimed.get(chain) {
                Some(other) => Fetch::After(other.clone()),
                None => {
                    claimed.insert(chain.clone(), receiver.clone());
                    ours.push(chain.clone());
                    Fetch::Own
                }
            })
            .collect();
        (Claim { flight: self.clone(), chains: ours, signal }, fetches)
    }
}

impl Fetch {
    /// Waits until the claim this fetch depends on has ended (at once for our own).
    pub(crate) async fn settled(self) {
        if let Fetch::After(mut other) = self {
            // Err: the claim's sender is gone, which is the signal.
            while other.changed().await.is_ok() {}
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claimed = self.flight.claimed.lock().unwrap_or_else(|p| p.into_inner());
        for chain in &self.chains {
            if claimed.get(chain).is_some_and(|r| r.same_channel(&self.signal.subscribe())) {
                claimed.remove(chain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    #[tokio::test]
    async fn a_second_pull_waits_for_the_first_s_claim_and_claims_what_nobody_has() {
        let flight = Arc::new(LayersInFlight::default());
        let (first, fetches) = flight.claim(&[digest(1), digest(2)]);
        assert!(fetches.iter().all(|f| matches!(f, Fetch::Own)));
        let (_second, fetches) = flight.claim(&[digest(2), digest(3)]);
        assert!(matches!(fetches[0], Fetch::After(_)) && matches!(fetches[1], Fetch::Own));
        let mut fetches = fetches.into_iter();
        let waiting = tokio::spawn(fetches.next().unwrap().settled());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the first pull still holds the layer");
        drop(first);
        waiting.await.unwrap();
        let (_third, fetches) = flight.claim(&[digest(1), digest(3)]);
        assert!(matches!(fetches[0], Fetch::Own), "the ended claim let its layers go");
        assert!(matches!(fetches[1], Fetch::After(_)), "the second pull's claim stays");
    }
}
