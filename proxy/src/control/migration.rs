//! The stored state of a namespace's backend migration (ADR-014): which
//! phase it is in, the backfill's checkpoint and progress, the last verify
//! report. The registry stores it next to the namespace documents, so every
//! proxy sharing the registry follows the same migration and a proxy that
//! restarts picks it up where it was.

use serde::{Deserialize, Serialize};

/// The phases of a migration, in order. `Switching` is the short fenced
/// step of a promote or of a rollback after promote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Writes are mirrored to the target.
    Mirroring,
    /// The primary's keys are being copied to the target.
    Backfilling,
    /// Every key that was on the primary has been copied.
    Backfilled,
    /// Both sides are being compared.
    Verifying,
    /// The last comparison found both sides equal.
    Verified,
    /// Writes are held while the primary changes.
    Switching,
    /// The target is the primary; the old primary is the shadow.
    Promoted,
    /// Done: the target serves alone.
    Finalized,
    /// Abandoned: the old primary serves alone.
    RolledBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mirroring => "mirroring",
            Self::Backfilling => "backfilling",
            Self::Backfilled => "backfilled",
            Self::Verifying => "verifying",
            Self::Verified => "verified",
            Self::Switching => "switching",
            Self::Promoted => "promoted",
            Self::Finalized => "finalized",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Whether the migration is over (a new one may start).
    pub fn ended(self) -> bool {
        matches!(self, Self::Finalized | Self::RolledBack)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A migration as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub namespace: String,
    /// The plugin that served the namespace when the migration started.
    pub source: String,
    /// The plugin it moves to.
    pub target: String,
    pub phase: Phase,
    /// Bumped by every stored change; updates are compare-and-set on it.
    pub revision: u64,
    pub started_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub backfill: Option<Backfill>,
    #[serde(default)]
    pub verify: Option<VerifyReport>,
    /// The switch under way (phase `switching`).
    #[serde(default)]
    pub switch: Option<Switch>,
    /// Why the last background step (backfill, verify, switch) failed.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub history: Vec<Event>,
}

/// One step taken, for `migrate status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: String,
    pub phase: Phase,
    pub by: String,
    #[serde(default)]
    pub note: String,
}

/// A switch of primary: the phase it leads to and the phase it returns to
/// if it cannot complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// The stored revision that began the switch; proxies acknowledge it.
    pub revision: u64,
    /// `promoted` or `rolled_back`.
    pub to: Phase,
    pub from: Phase,
    /// The plugin that becomes the primary.
    pub primary: String,
}

/// The backfill's progress and checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backfill {
    /// The scan page token to resume after (empty: from the start).
    pub checkpoint: String,
    /// Keys on the primary when the backfill counted them.
    pub total: u64,
    pub scanned: u64,
    /// Copied to the target.
    pub copied: u64,
    /// Already on the target (a mirrored write got there first).
    pub skipped: u64,
    /// Copied, then deleted again because the primary deleted them meanwhile.
    pub undone: u64,
    /// Keys per second the backfill is limited to.
    pub rate: u64,
    /// Keys per second over the last checkpoints.
    pub keys_per_second: f64,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    /// The proxy running it and when it last reported.
    pub owner: String,
    pub heartbeat_unix: u64,
}

/// What the last verify found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    pub owner: String,
    #[serde(default)]
    pub heartbeat_unix: u64,
    pub source_keys: u64,
    pub target_keys: u64,
    pub matched: u64,
    /// On the primary, not on the target.
    pub missing: u64,
    /// On the target, not on the primary.
    pub extra: u64,
    /// On both, with different values.
    pub different: u64,
    /// Differences first seen but gone when checked again (writes in
    /// flight), not counted above.
    pub settled: u64,
    /// Keys written during every look, so never compared; the compared
    /// reads cover them.
    #[serde(default)]
    pub busy: u64,
    /// A few differences: `missing|extra|different key-sha256:<hash>`.
    pub samples: Vec<String>,
    /// Reads compared by this proxy's shadow during the clean window, and
    /// how many differed.
    pub window_seconds: u64,
    pub reads_compared: u64,
    pub read_mismatches: u64,
    /// Whether both sides were equal and the window clean.
    pub clean: bool,
}

/// Now, as the registry stores times.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
