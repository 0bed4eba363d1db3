//! Container holds on image layers: while a hold exists, RemoveImage may remove the image's
//! record but its layers stay. Synchronous (containers call them from blocking threads).
//! Touches `<root>/images/holds` and, on release, what garbage collection removes.

use std::path::PathBuf;

use super::records::{Hold, ImageRecord};
use super::state::{Lookup, Store};
use crate::image::error::ImageError;

/// An image as a container uses it: its record and its layers' directories, lowest first.
#[derive(Debug, Clone)]
pub struct HeldImage {
    pub record: ImageRecord,
    /// Snapshot directories, lowest layer first (overlayfs wants the reverse, top first, in
    /// `lowerdir=`).
    pub layer_dirs: Vec<PathBuf>,
}

impl Store {
    /// Records, crash-safely, that `holder` (a container ID) uses the layers of the image
    /// `lookup` names (`image` is its name for messages). Holding again replaces the
    /// previous hold. Blocking.
    pub fn hold(&self, holder: &str, lookup: &Lookup, image: &str) -> Result<HeldImage, ImageError> {
        if !crate::ids::is_safe_id(holder) {
            return Err(ImageError::InvalidHolder(holder.to_string()));
        }
        let _commit = self.commit_lock();
        let record = self.find(lookup).ok_or_else(|| ImageError::NotFound(image.to_string()))?;
        let layers = record.chain_ids();
        self.records_mut().hold(holder, Hold { image: record.id.clone(), layers })?;
        let layer_dirs = self.layer_dirs(&record);
        Ok(HeldImage { record, layer_dirs })
    }

    /// Ends every hold whose holder `keep` does not accept (at start: holders whose container
    /// has no record any more, their image volumes' holds included); returns their names.
    /// Blocking.
    pub fn release_holds_except(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, ImageError> {
        let (released, detached) = {
            let _commit = self.commit_lock();
            let mut records = self.records_mut();
            let gone: Vec<String> = records.holders().filter(|h| !keep(h)).map(str::to_string).collect();
            for holder in &gone {
                records.release(holder)?;
            }
            drop(records);
            let detached = (!gone.is_empty()).then(|| self.collect_garbage());
            (gone, detached)
        };
        if let Some(detached) = detached {
            detached.delete();
        }
        Ok(released)
    }

    /// Ends a hold; layers no image needs any more are removed. Idempotent. Blocking.
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        if !crate::ids::is_safe_id(holder) {
            return Ok(());
        }
        let detached = {
            let _commit = self.commit_lock();
            self.records_mut().release(holder)?;
            self.collect_garbage()
        };
        detached.delete();
        Ok(())
    }
}
