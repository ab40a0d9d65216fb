//! Progress reporting and cancellation of indexing: a callback after every stored batch.

/// What the progress callback tells the indexing loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next batch.
    Continue,
    /// Stop: indexing returns [`Error::Cancelled`](crate::Error::Cancelled); the batches
    /// reported before stay stored.
    Cancel,
}

/// Where indexing stands, after a batch was stored (acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexProgress {
    /// Items processed so far (stored or skipped).
    pub done: usize,
    /// Items in the call.
    pub total: usize,
    /// Items stored so far.
    pub indexed: usize,
    /// Items skipped so far (unreadable images, …; see
    /// [`IndexReport::skipped`](crate::IndexReport::skipped)).
    pub skipped: usize,
}

/// The progress callback: called after every stored batch; return [`Flow::Cancel`] to stop.
///
/// ```
/// use mm_retrieval::{Flow, IndexProgress};
/// let mut progress = |p: &IndexProgress| {
///     eprintln!("{}/{}", p.done, p.total);
///     Flow::Continue
/// };
/// let callback: &mut mm_retrieval::Progress = &mut progress;
/// # let _ = callback;
/// ```
pub type Progress<'a> = dyn FnMut(&IndexProgress) -> Flow + 'a;
