//! Every (state, observation) pair, with the state it leads to and the actions it asks for.

use super::{Action::*, Observation as O, State, transition};

const LIVE: State = State::Live;
const ROTATED: State = State::Rotated;
const DELETED: State = State::Deleted { sealed: false };
const DELETED_SEALED: State = State::Deleted { sealed: true };
const TRUNCATED: State = State::Truncated { sealed: false };
const TRUNCATED_SEALED: State = State::Truncated { sealed: true };
const INFLATED: State = State::Inflated { sealed: false };
const INFLATED_SEALED: State = State::Inflated { sealed: true };

const STATES: [State; 8] = [
    LIVE,
    ROTATED,
    DELETED,
    DELETED_SEALED,
    TRUNCATED,
    TRUNCATED_SEALED,
    INFLATED,
    INFLATED_SEALED,
];

const OBSERVATIONS: [O; 10] = [
    O::Newest,
    O::NewerExists,
    O::Listed,
    O::NotListed,
    O::TruncatedCopyFound,
    O::TruncatedNoCopy,
    O::InodeReused,
    O::NotNeeded,
    O::TooManyGhosts,
    O::OverOpenCap,
];

/// (state, observation) → (new state, actions).
type Row = (State, O, State, &'static [super::Action]);

const TABLE: &[Row] = &[
    // Files taken in or withdrawn: sealed exactly when a newer file is known.
    (LIVE, O::Newest, LIVE, &[]),
    (ROTATED, O::Newest, LIVE, &[]),
    (DELETED, O::Newest, DELETED, &[]),
    (DELETED_SEALED, O::Newest, DELETED, &[]),
    (TRUNCATED, O::Newest, TRUNCATED, &[]),
    (TRUNCATED_SEALED, O::Newest, TRUNCATED, &[]),
    (INFLATED, O::Newest, INFLATED, &[]),
    (INFLATED_SEALED, O::Newest, INFLATED, &[]),
    (LIVE, O::NewerExists, ROTATED, &[]),
    (ROTATED, O::NewerExists, ROTATED, &[]),
    (DELETED, O::NewerExists, DELETED_SEALED, &[]),
    (DELETED_SEALED, O::NewerExists, DELETED_SEALED, &[]),
    (TRUNCATED, O::NewerExists, TRUNCATED_SEALED, &[]),
    (TRUNCATED_SEALED, O::NewerExists, TRUNCATED_SEALED, &[]),
    (INFLATED, O::NewerExists, INFLATED_SEALED, &[]),
    (INFLATED_SEALED, O::NewerExists, INFLATED_SEALED, &[]),
    // A listing shows it (renamed by a rotation, or missed once by a listing during a rename).
    (LIVE, O::Listed, LIVE, &[TakePath]),
    (ROTATED, O::Listed, ROTATED, &[TakePath]),
    (DELETED, O::Listed, LIVE, &[TakePath]),
    (DELETED_SEALED, O::Listed, ROTATED, &[TakePath]),
    (TRUNCATED, O::Listed, TRUNCATED, &[]),
    (TRUNCATED_SEALED, O::Listed, TRUNCATED_SEALED, &[]),
    (INFLATED, O::Listed, INFLATED, &[]),
    (INFLATED_SEALED, O::Listed, INFLATED_SEALED, &[]),
    // A listing does not show it: deleted (held open while a cursor needs it).
    (LIVE, O::NotListed, DELETED, &[DropPath]),
    (ROTATED, O::NotListed, DELETED_SEALED, &[DropPath]),
    (DELETED, O::NotListed, DELETED, &[DropPath]),
    (DELETED_SEALED, O::NotListed, DELETED_SEALED, &[DropPath]),
    (TRUNCATED, O::NotListed, TRUNCATED, &[DropPath]),
    (TRUNCATED_SEALED, O::NotListed, TRUNCATED_SEALED, &[DropPath]),
    (INFLATED, O::NotListed, INFLATED, &[DropPath]),
    (INFLATED_SEALED, O::NotListed, INFLATED_SEALED, &[DropPath]),
    // Copy-truncate, the copy found: read from it.
    (LIVE, O::TruncatedCopyFound, LIVE, &[AdoptCopy]),
    (ROTATED, O::TruncatedCopyFound, ROTATED, &[AdoptCopy]),
    (DELETED, O::TruncatedCopyFound, LIVE, &[AdoptCopy]),
    (DELETED_SEALED, O::TruncatedCopyFound, ROTATED, &[AdoptCopy]),
    (TRUNCATED, O::TruncatedCopyFound, LIVE, &[AdoptCopy]),
    (TRUNCATED_SEALED, O::TruncatedCopyFound, ROTATED, &[AdoptCopy]),
    (INFLATED, O::TruncatedCopyFound, INFLATED, &[]),
    (INFLATED_SEALED, O::TruncatedCopyFound, INFLATED_SEALED, &[]),
    // Truncated, no copy: one more listing, then the loss is counted.
    (LIVE, O::TruncatedNoCopy, TRUNCATED, &[]),
    (ROTATED, O::TruncatedNoCopy, TRUNCATED_SEALED, &[]),
    (DELETED, O::TruncatedNoCopy, TRUNCATED, &[]),
    (DELETED_SEALED, O::TruncatedNoCopy, TRUNCATED_SEALED, &[]),
    (
        TRUNCATED,
        O::TruncatedNoCopy,
        DELETED,
        &[CountLoss, DropPath, Close, DisownInode],
    ),
    (
        TRUNCATED_SEALED,
        O::TruncatedNoCopy,
        DELETED_SEALED,
        &[CountLoss, DropPath, Close, DisownInode],
    ),
    (INFLATED, O::TruncatedNoCopy, INFLATED, &[]),
    (INFLATED_SEALED, O::TruncatedNoCopy, INFLATED_SEALED, &[]),
    // Its inode holds another file now.
    (LIVE, O::InodeReused, DELETED, &[DropPath, DisownInode]),
    (ROTATED, O::InodeReused, DELETED_SEALED, &[DropPath, DisownInode]),
    (DELETED, O::InodeReused, DELETED, &[DropPath, DisownInode]),
    (
        DELETED_SEALED,
        O::InodeReused,
        DELETED_SEALED,
        &[DropPath, DisownInode],
    ),
    (TRUNCATED, O::InodeReused, TRUNCATED, &[DropPath, DisownInode]),
    (
        TRUNCATED_SEALED,
        O::InodeReused,
        TRUNCATED_SEALED,
        &[DropPath, DisownInode],
    ),
    (INFLATED, O::InodeReused, INFLATED, &[]),
    (INFLATED_SEALED, O::InodeReused, INFLATED_SEALED, &[]),
    // No cursor needs it: close (opened again by path when one does).
    (LIVE, O::NotNeeded, LIVE, &[Close]),
    (ROTATED, O::NotNeeded, ROTATED, &[Close]),
    (DELETED, O::NotNeeded, DELETED, &[Close]),
    (DELETED_SEALED, O::NotNeeded, DELETED_SEALED, &[Close]),
    (TRUNCATED, O::NotNeeded, TRUNCATED, &[Close]),
    (TRUNCATED_SEALED, O::NotNeeded, TRUNCATED_SEALED, &[Close]),
    (INFLATED, O::NotNeeded, INFLATED, &[Close]),
    (INFLATED_SEALED, O::NotNeeded, INFLATED_SEALED, &[Close]),
    // Too many entries of files off disk: the oldest ones are forgotten.
    (LIVE, O::TooManyGhosts, LIVE, &[]),
    (ROTATED, O::TooManyGhosts, ROTATED, &[]),
    (DELETED, O::TooManyGhosts, DELETED, &[DisownInode]),
    (DELETED_SEALED, O::TooManyGhosts, DELETED_SEALED, &[DisownInode]),
    (TRUNCATED, O::TooManyGhosts, TRUNCATED, &[DisownInode]),
    (
        TRUNCATED_SEALED,
        O::TooManyGhosts,
        TRUNCATED_SEALED,
        &[DisownInode],
    ),
    (INFLATED, O::TooManyGhosts, INFLATED, &[DisownInode]),
    (INFLATED_SEALED, O::TooManyGhosts, INFLATED_SEALED, &[DisownInode]),
    // Too many descriptors held off disk: the oldest is closed, what lagging cursors lose counted.
    (LIVE, O::OverOpenCap, LIVE, &[]),
    (ROTATED, O::OverOpenCap, ROTATED, &[]),
    (DELETED, O::OverOpenCap, DELETED, &[CountLoss, Forget]),
    (
        DELETED_SEALED,
        O::OverOpenCap,
        DELETED_SEALED,
        &[CountLoss, Forget],
    ),
    (TRUNCATED, O::OverOpenCap, TRUNCATED, &[CountLoss, Forget]),
    (
        TRUNCATED_SEALED,
        O::OverOpenCap,
        TRUNCATED_SEALED,
        &[CountLoss, Forget],
    ),
    (INFLATED, O::OverOpenCap, INFLATED, &[CountLoss, Forget]),
    (
        INFLATED_SEALED,
        O::OverOpenCap,
        INFLATED_SEALED,
        &[CountLoss, Forget],
    ),
];

#[test]
fn every_transition_matches_the_table() {
    for &(state, obs, want_state, want_actions) in TABLE {
        let step = transition(state, obs);
        assert_eq!(
            (step.state, step.actions),
            (want_state, want_actions),
            "{state:?} observing {obs:?}"
        );
    }
}

#[test]
fn the_table_has_every_state_and_observation_once() {
    for state in STATES {
        for obs in OBSERVATIONS {
            let rows = TABLE.iter().filter(|r| r.0 == state && r.1 == obs).count();
            assert_eq!(rows, 1, "{state:?} observing {obs:?}");
        }
    }
    assert_eq!(TABLE.len(), STATES.len() * OBSERVATIONS.len());
}

/// The life of a file rotated by copy-truncate while a drain lags, its copy seen one listing
/// late, then deleted and closed: the states it goes through, and one loss counted only when
/// the copy never shows.
#[test]
fn copy_truncate_seen_late_then_deletion() {
    let walk = |obs: &[O]| {
        obs.iter().fold((LIVE, Vec::new()), |(state, mut actions), &o| {
            let step = transition(state, o);
            actions.extend_from_slice(step.actions);
            (step.state, actions)
        })
    };
    let (state, actions) = walk(&[
        O::TruncatedNoCopy,
        O::TruncatedCopyFound,
        O::NewerExists,
        O::NotListed,
    ]);
    assert_eq!(state, DELETED_SEALED);
    assert_eq!(actions, [AdoptCopy, DropPath]);
    let (state, actions) = walk(&[
        O::NewerExists,
        O::TruncatedNoCopy,
        O::TruncatedNoCopy,
        O::NotNeeded,
    ]);
    assert_eq!(state, DELETED_SEALED);
    assert_eq!(actions, [CountLoss, DropPath, Close, DisownInode, Close]);
}

#[test]
fn sealed_and_inode_claims_follow_the_state() {
    let sealed: Vec<bool> = STATES.iter().map(|s| s.sealed()).collect();
    assert_eq!(sealed, [false, true, false, true, false, true, false, true]);
    let claims: Vec<bool> = STATES.iter().map(|s| s.claims_inode()).collect();
    assert_eq!(claims, [true, true, true, true, false, false, true, true]);
    assert_eq!(State::NEW_ON_DISK, LIVE);
    assert_eq!(State::NEW_INFLATED, INFLATED_SEALED);
}
