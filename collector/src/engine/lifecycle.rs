//! A log file's life, in one place: every state a known file can be in, and every transition,
//! driven by what a listing, a look at the file or the cursors' needs observed.
//!
//! The engine ([`super::files`], `tail/rescan.rs`) observes; [`transition`] decides; the entry
//! applies the [`Action`]s about itself (its path, inode and descriptor), and the caller the ones
//! about the container's cursors (a counted loss). What a file looks like in each state:
//!
//! | State | On disk | Grows | Claims its inode | Read from |
//! | --- | --- | --- | --- | --- |
//! | [`State::Live`] | yes | yes | yes | the file |
//! | [`State::Rotated`] | yes (renamed, or its copy) | CRI: briefly, by a runtime's last write | yes | the file, or the copy |
//! | [`State::Deleted`] | no | no | until forgotten | the descriptor held open |
//! | [`State::Truncated`] | the inode holds another file now | no | no | nothing, until its copy is found |
//! | [`State::Inflated`] | no (a compressed file) | no | no inode | an unnamed temporary file |
//!
//! Invariants:
//! * a file is sealed (a cursor at its end moves on) exactly when a newer file of its container
//!   is known; each state carries that, so a withdrawn newer file unseals it. A sealed CRI file
//!   can still grow for a moment (containerd's old writer flushes what it held), so cursors
//!   leave it only `rotate_wait` after it was sealed (`read.rs`);
//! * a file truncated in place (copy-truncate) keeps its entry for one more listing while its
//!   copy may still appear; a second listing without the copy counts the loss for the cursors
//!   that had not read it, and the entry is then a deleted one with nothing to read;
//! * a read that finds a file's head changed, or the file shorter than its cursor, changes no
//!   state itself: it stops reading that file and asks for a look (`Reader::truncation_seen` in
//!   `read.rs`), and the look's observation ([`Observation::TruncatedCopyFound`],
//!   [`Observation::TruncatedNoCopy`], [`Observation::InodeReused`]) makes the transition, so
//!   every transition has its one row here whoever noticed the change first;
//! * a file that no cursor needs closes its descriptor (it is opened again by path when one
//!   does); a deleted one is forgotten once it no longer claims its inode.

/// Where a known log file is in its life (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The newest file, on disk: the runtime appends to it.
    Live,
    /// On disk, and a newer file exists: rotated (renamed), or copied away by copy-truncate and
    /// read from the copy.
    Rotated,
    /// Gone from disk (deleted, out of the listing, or its inode reused), read through the
    /// descriptor held while a cursor needs it.
    Deleted {
        /// A newer file exists.
        sealed: bool,
    },
    /// Truncated in place, its old content not found in a copy yet: its inode holds another
    /// file's content now, so the entry no longer claims it.
    Truncated {
        /// A newer file exists.
        sealed: bool,
    },
    /// The content of a compressed rotated file, inflated: no path and no inode of its own.
    Inflated {
        /// A newer file exists.
        sealed: bool,
    },
}

/// What the engine observed about a known file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// After files were taken in or withdrawn: no newer file is known.
    Newest,
    /// After files were taken in or withdrawn: a newer file is known.
    NewerExists,
    /// A listing shows the file (by inode and head), perhaps under a new name (a rotation).
    Listed,
    /// A listing does not show the file.
    NotListed,
    /// The file shrank or its head changed, and a file on disk starts with its head: the copy
    /// copy-truncate made.
    TruncatedCopyFound,
    /// The file shrank or its head changed, and no file on disk starts with its head.
    TruncatedNoCopy,
    /// Its inode now holds another file (it was reused, or a copy was written over it).
    InodeReused,
    /// No cursor needs it any more.
    NotNeeded,
    /// Not needed, gone from disk, and more such entries are kept than the bound.
    TooManyGhosts,
    /// Held open while off disk, but more such files are held than the bound: closed now.
    OverOpenCap,
}

/// What to do about a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Remember the path it was listed at.
    TakePath,
    /// It has no path any more.
    DropPath,
    /// It no longer claims its inode (forgotten once no cursor needs it).
    DisownInode,
    /// Read its old content from the copy found: the copy's path, inode, size and descriptor.
    AdoptCopy,
    /// Close its descriptor.
    Close,
    /// Count the lines of the cursors that had not read it to its end as lost.
    CountLoss,
    /// Forget the entry now.
    Forget,
}

/// One transition: the new state and what to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The state after the observation.
    pub state: State,
    /// What to do, in order.
    pub actions: &'static [Action],
}

impl State {
    /// A file first seen on disk (sealed by the next [`Observation::NewerExists`]).
    pub const NEW_ON_DISK: State = State::Live;

    /// A compressed file inflated: nothing writes it.
    pub const NEW_INFLATED: State = State::Inflated { sealed: true };

    /// Whether a newer file is known (the file will not grow).
    pub fn sealed(self) -> bool {
        match self {
            State::Live => false,
            State::Rotated => true,
            State::Deleted { sealed } | State::Truncated { sealed } | State::Inflated { sealed } => sealed,
        }
    }

    /// Whether the entry stands for the content its inode holds now (a truncated file's inode
    /// holds a new file's content).
    pub fn claims_inode(self) -> bool {
        !matches!(self, State::Truncated { .. })
    }

    /// On disk, sealed as `sealed`.
    fn on_disk(sealed: bool) -> State {
        match sealed {
            true => State::Rotated,
            false => State::Live,
        }
    }

    /// The same state, sealed as `sealed`.
    fn with_sealed(self, sealed: bool) -> State {
        match self {
            State::Live | State::Rotated => State::on_disk(sealed),
            State::Deleted { .. } => State::Deleted { sealed },
            State::Truncated { .. } => State::Truncated { sealed },
            State::Inflated { .. } => State::Inflated { sealed },
        }
    }
}

/// The one place a file's state changes: `state` observed `obs`.
pub fn transition(state: State, obs: Observation) -> Step {
    use {Action::*, Observation as O, State as S};
    let sealed = state.sealed();
    let step = |state, actions| Step { state, actions };
    match (state, obs) {
        (_, O::Newest) => step(state.with_sealed(false), &[]),
        (_, O::NewerExists) => step(state.with_sealed(true), &[]),
        // Seen on disk: where it is now (a rotation renamed it). A deleted entry that still
        // claims its inode was missed by a listing taken during a rename.
        (S::Live | S::Rotated | S::Deleted { .. }, O::Listed) => step(S::on_disk(sealed), &[TakePath]),
        // Not claimed by inode, so a listing never shows them as themselves.
        (S::Truncated { .. } | S::Inflated { .. }, O::Listed) => step(state, &[]),
        (S::Live | S::Rotated, O::NotListed) => step(S::Deleted { sealed }, &[DropPath]),
        (S::Deleted { .. } | S::Truncated { .. } | S::Inflated { .. }, O::NotListed) => {
            step(state, &[DropPath])
        }
        // Copy-truncate: the old content is in the copy, which the entry reads from now on (the
        // truncated file is a new entry at the next listing).
        (S::Inflated { .. }, O::TruncatedCopyFound) => step(state, &[]),
        (_, O::TruncatedCopyFound) => step(S::on_disk(sealed), &[AdoptCopy]),
        // The listing may predate the copy: one more look before the content counts as lost.
        (S::Inflated { .. }, O::TruncatedNoCopy) => step(state, &[]),
        (S::Truncated { .. }, O::TruncatedNoCopy) => {
            step(S::Deleted { sealed }, &[CountLoss, DropPath, Close, DisownInode])
        }
        (_, O::TruncatedNoCopy) => step(S::Truncated { sealed }, &[]),
        (S::Inflated { .. }, O::InodeReused) => step(state, &[]),
        (S::Truncated { .. }, O::InodeReused) => step(state, &[DropPath, DisownInode]),
        (_, O::InodeReused) => step(S::Deleted { sealed }, &[DropPath, DisownInode]),
        (_, O::NotNeeded) => step(state, &[Close]),
        (S::Live | S::Rotated, O::TooManyGhosts) => step(state, &[]),
        (_, O::TooManyGhosts) => step(state, &[DisownInode]),
        // Held open off disk (deleted, truncated, or inflated) beyond the bound of descriptors.
        (S::Live | S::Rotated, O::OverOpenCap) => step(state, &[]),
        (_, O::OverOpenCap) => step(state, &[CountLoss, Forget]),
    }
}

#[cfg(test)]
mod tests;
