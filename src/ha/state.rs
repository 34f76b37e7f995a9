//! The wanted role: the states of the HA loop (diagram in [`super`]).
//!
//! The state is what the core has decided this node should be. What
//! PostgreSQL actually is lives apart, in the last [`PgState`](super::PgState);
//! every step compares the two and asks for what closes the gap.

use crate::clock::BootInstant;

use super::view::Lsn;

/// The node's wanted role. Issue 4 adds `Demoting`, `Fenced` and
/// `Rejoining` as further variants: each state's rules live in their own
/// function, and the lease, fencing, probe and publish rules apply to
/// every state, so a new variant only needs its own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for the first store view and the first probe: nothing is
    /// decided blind.
    Starting,
    /// Making a data directory: bootstrapping a new cluster, or cloning
    /// from a running member.
    Bootstrapping(BootstrapStep),
    /// Following the leader key's holder as a standby.
    Replica,
    /// A standby taking the vacant leader key, then promoting under it.
    Candidate(CandidateStep),
    /// Holding the leader key and running the writable primary.
    Primary(PrimaryState),
    /// A diverged former primary (or standby) getting back onto the
    /// leader's timeline: pg_rewind, else a fresh clone.
    Rejoining(RejoinStep),
    /// A primary handing the leader key to `to` on an operator's request
    /// (switchover, or failover while it leads); it keeps its lease and
    /// member key, and rejoins as a standby of the new primary.
    Demoting {
        /// The member the request promotes.
        to: String,
        /// Where the handover stands.
        step: DemotingStep,
    },
    /// Shutting down: stop PostgreSQL, hand over, release the lease, exit.
    Stopping(StoppingState),
    /// Done; the core asks for nothing more.
    Exited,
}

impl State {
    /// Short name for logs and the REST API.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Bootstrapping(_) => "bootstrapping",
            State::Replica => "replica",
            State::Candidate(_) => "candidate",
            State::Primary(_) => "primary",
            State::Rejoining(_) => "rejoining",
            State::Demoting { .. } => "demoting",
            State::Stopping(_) => "stopping",
            State::Exited => "exited",
        }
    }
}

/// Where a bootstrap stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapStep {
    /// The cluster has no `initialize` key: race for it.
    Racing,
    /// Won the race with an empty data directory: initdb.
    Initdb,
    /// Data directory ready: take the leader key before PostgreSQL may run
    /// writable (the bootstrap winner follows the same lease rule as
    /// everyone else).
    TakingLeader,
    /// Holding the leader key: start the new primary.
    StartingPrimary,
    /// The new primary runs: create the roles, then it is a full primary.
    CreatingRoles,
    /// Someone else bootstrapped: wait for a running member to clone from.
    AwaitingLeader,
    /// pg_basebackup is copying; a replica once it is done.
    Cloning,
}

/// Where a candidacy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateStep {
    /// The leader key is vacant and this standby may take it: stop
    /// streaming from the old primary, then ask every other member its
    /// position over gRPC ([`Action::QueryPositions`]).
    ///
    /// [`Action::QueryPositions`]: super::Action::QueryPositions
    Polling,
    /// Eligible, and the leader key is vacant: `AcquireLeader` on our lease.
    Acquiring,
    /// Won the key with `pre_promote` configured: run it (under the
    /// lease) before promoting; a failure abandons the key unpromoted.
    PrePromoting,
    /// Won the key: promote the standby while the lease is valid.
    Promoting,
    /// The promotion failed: fence the server (it may be half-promoted),
    /// then release the key so another member can take it.
    Abandoning,
}

/// Extra state of a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrimaryState {
    /// A promotion finished and its CHECKPOINT has not run yet.
    pub checkpoint_pending: bool,
}

/// Where a shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppingState {
    /// Stopping PostgreSQL (fast; fenced if that fails).
    StoppingPostgres,
    /// PostgreSQL is stopped and this node holds the leader key: keep the
    /// key (and its lease) until a standby has received the shutdown
    /// checkpoint, so no standby is promoted without the last writes.
    AwaitingReplica {
        /// The shutdown checkpoint's LSN.
        checkpoint: Lsn,
        /// Release anyway at this instant.
        deadline: BootInstant,
    },
    /// Revoke the lease (deleting the leader and member keys), then exit.
    Releasing,
}

/// Where a handover on request stands (see `switchover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemotingStep {
    /// CHECKPOINT while still writable, so the shutdown checkpoint (the
    /// write gap) is short.
    Checkpointing,
    /// Stopping PostgreSQL (fast: its walsenders send the shutdown
    /// checkpoint to the standbys before they exit).
    Stopping,
    /// Stopped cleanly: keep the key until the candidate has received the
    /// shutdown checkpoint, or give up and run again as primary at
    /// `deadline` (handover_timeout).
    AwaitingCandidate {
        /// The shutdown checkpoint's LSN.
        checkpoint: Lsn,
        /// Give up at this instant.
        deadline: BootInstant,
    },
    /// Delete the leader key (compare-and-set on our write); the lease and
    /// the member key stay.
    Releasing,
}

/// Where a rejoin stands (see `rejoin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinStep {
    /// Stop the diverged standby (fast).
    Stopping,
    /// Stopped: pg_rewind from the leader.
    Rewinding,
    /// Rewound: start as a standby of the leader, then a replica.
    StartingStandby,
    /// pg_rewind failed (or is off): move the data directory aside, then
    /// clone (`Bootstrapping::AwaitingLeader`).
    MovingAside,
    /// pg_rewind failed and `remove_data_directory_on_rewind_failure` is
    /// off: stay stopped, publish "rewind failed", wait for an operator
    /// (who empties the data directory to have it re-cloned).
    Failed,
}
