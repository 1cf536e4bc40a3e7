//! The upgrade state model, as a pure machine: which operator request is
//! legal in which state, which steps it runs, and where each step leaves the
//! upgrade. No process is started here; the coordinator runs the steps and
//! tells the machine how each one ended.
//!
//! ```text
//!  Idle ─split─▶ PrepareSplit ─▶ Split ─merge─▶ PrepareMerge ─▶ Merge ─commit─▶ Commit ─finish─▶ Finish ─▶ Idle
//!                 │               │              │               │
//!                 └───────────────┴────abort─────┴───────────────┴──▶ Abort ─finish─▶ Finish ─▶ Idle
//! ```
//!
//! A step that fails leaves the operational state `Broken` in the state it
//! was entering, until `retry` (the failed step runs again, then the rest of
//! its request) or `abort`. Nothing advances while a step is `Busy`. A
//! request that is not legal is refused with a message naming the state, and
//! changes nothing.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            /// Every value, in the model's order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            /// The name the contract spells (D-Bus, environment, `status`).
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => stringify!($v)),* }
            }
            /// The value named `s` (exact spelling).
            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.name() == s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// Where the upgrade is (`FAULTBRIDGE_UPGRADE_STATE`, `StateChanged`).
    UpgradeState {
        Idle,
        PrepareSplit,
        Split,
        PrepareMerge,
        Merge,
        Commit,
        /// Cleaning up after Commit or Abort; then Idle.
        Finish,
        Abort,
    }
);

named_enum!(
    /// How the last step went.
    Operational {
        /// Done; the next request may be made.
        Ready,
        /// A step is running.
        Busy,
        /// A step failed: `retry` it or `abort`.
        Broken,
    }
);

named_enum!(
    /// Which process (`FAULTBRIDGE_UPGRADE_SIDE`).
    Side {
        /// The running daemon, the one acting until Merge.
        Production,
        /// The new binary, started beside it at Split.
        Upgrade,
    }
);

named_enum!(
    /// The task in progress (`FAULTBRIDGE_UPGRADE_REQUEST`).
    Request {
        Idle,
        CheckReadiness,
        PrepareSplit,
        ExecuteSplit,
        PrepareMerge,
        ExecuteMerge,
        Commit,
        Abort,
        Start,
        Stop,
        Backup,
    }
);

named_enum!(
    /// What an operator asks (`faultbridge upgrade …`, the D-Bus methods).
    Command {
        Check,
        Split,
        Merge,
        Commit,
        Abort,
        Finish,
        Retry,
    }
);

impl Command {
    /// The subcommand's spelling: `check`, `split`, …
    pub fn verb(self) -> &'static str {
        match self {
            Command::Check => "check",
            Command::Split => "split",
            Command::Merge => "merge",
            Command::Commit => "commit",
            Command::Abort => "abort",
            Command::Finish => "finish",
            Command::Retry => "retry",
        }
    }
}

named_enum!(
    /// One unit of work the coordinator runs; a request is one or two steps.
    Step {
        /// The readiness check (Idle; also the start of PrepareSplit).
        CheckReadiness,
        PrepareSplit,
        ExecuteSplit,
        PrepareMerge,
        ExecuteMerge,
        Commit,
        Abort,
        Finish,
    }
);

impl Step {
    /// The state the upgrade is in while this step runs (and after it).
    pub const fn state(self) -> UpgradeState {
        match self {
            Step::CheckReadiness => UpgradeState::Idle,
            Step::PrepareSplit => UpgradeState::PrepareSplit,
            Step::ExecuteSplit => UpgradeState::Split,
            Step::PrepareMerge => UpgradeState::PrepareMerge,
            Step::ExecuteMerge => UpgradeState::Merge,
            Step::Commit => UpgradeState::Commit,
            Step::Abort => UpgradeState::Abort,
            Step::Finish => UpgradeState::Finish,
        }
    }

    /// The request custom actions see while it runs.
    pub const fn request(self) -> Request {
        match self {
            Step::CheckReadiness => Request::CheckReadiness,
            Step::PrepareSplit => Request::PrepareSplit,
            Step::ExecuteSplit => Request::ExecuteSplit,
            Step::PrepareMerge => Request::PrepareMerge,
            Step::ExecuteMerge => Request::ExecuteMerge,
            Step::Commit => Request::Commit,
            Step::Abort => Request::Abort,
            Step::Finish => Request::Idle,
        }
    }
}

/// Why a request was refused. The machine is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("cannot {verb} in state {state} ({operational}): {why}")]
    Illegal {
        verb: &'static str,
        state: UpgradeState,
        operational: Operational,
        why: &'static str,
    },
}

/// The steps a legal request runs, in order.
pub type Plan = Vec<Step>;

/// The upgrade state, the operational state, and what to run on `retry`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    state: UpgradeState,
    operational: Operational,
    /// The step that failed and the steps of its request after it.
    retry: Vec<Step>,
    /// The steps still to run of the request in progress.
    pending: Vec<Step>,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine::new()
    }
}

impl Machine {
    /// Idle and Ready.
    pub const fn new() -> Machine {
        Machine {
            state: UpgradeState::Idle,
            operational: Operational::Ready,
            retry: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub fn state(&self) -> UpgradeState {
        self.state
    }

    pub fn operational(&self) -> Operational {
        self.operational
    }

    /// The step `retry` would run first, while Broken.
    pub fn failed_step(&self) -> Option<Step> {
        self.retry.first().copied()
    }

    /// Whether the Upgrade side runs isolated beside the acting Production
    /// side (`FAULTBRIDGE_UPGRADE_SPLIT`).
    pub fn split(&self) -> bool {
        matches!(self.state, UpgradeState::Split | UpgradeState::PrepareMerge)
    }

    fn refuse(&self, c: Command, why: &'static str) -> Refused {
        Refused::Illegal {
            verb: c.verb(),
            state: self.state,
            operational: self.operational,
            why,
        }
    }

    /// The steps `c` would run from here, or why it is refused. Changes
    /// nothing (see [`Machine::request`]).
    pub fn plan(&self, c: Command) -> Result<Plan, Refused> {
        use Operational::*;
        use UpgradeState as S;
        if self.operational == Busy {
            return Err(self.refuse(c, "a step is still running; wait for it"));
        }
        let broken = self.operational == Broken;
        match c {
            Command::Retry => {
                if broken {
                    Ok(self.retry.clone())
                } else {
                    Err(self.refuse(c, "nothing failed, there is nothing to retry"))
                }
            }
            // The readiness check runs in Idle as often as wanted, also
            // after a failed one (with another binary, say).
            Command::Check if self.state == S::Idle => Ok(vec![Step::CheckReadiness]),
            Command::Abort => match self.state {
                S::PrepareSplit | S::Split | S::PrepareMerge | S::Merge => Ok(vec![Step::Abort]),
                S::Idle => Err(self.refuse(c, "no upgrade is in progress")),
                S::Commit | S::Finish => Err(self.refuse(
                    c,
                    "the upgrade is committed (abort is possible up to Merge)",
                )),
                S::Abort => Err(self.refuse(c, "the upgrade is already aborted; finish it")),
            },
            _ if broken => Err(self.refuse(c, "the last step failed; retry it or abort")),
            Command::Check => match self.state {
                S::Idle => Ok(vec![Step::CheckReadiness]),
                _ => Err(self.refuse(c, "the readiness check runs in Idle only")),
            },
            Command::Split => match self.state {
                S::Idle => Ok(vec![Step::PrepareSplit, Step::ExecuteSplit]),
                _ => Err(self.refuse(c, "split starts from Idle")),
            },
            Command::Merge => match self.state {
                S::Split => Ok(vec![Step::PrepareMerge, Step::ExecuteMerge]),
                _ => Err(self.refuse(c, "merge follows Split")),
            },
            Command::Commit => match self.state {
                S::Merge => Ok(vec![Step::Commit]),
                _ => Err(self.refuse(c, "commit follows Merge")),
            },
            Command::Finish => match self.state {
                S::Commit | S::Abort => Ok(vec![Step::Finish]),
                _ => Err(self.refuse(c, "finish follows Commit or Abort")),
            },
        }
    }

    /// Accepts `c`: the plan is queued; take its steps with
    /// [`Machine::next_step`].
    pub fn request(&mut self, c: Command) -> Result<(), Refused> {
        let plan = self.plan(c)?;
        self.retry.clear();
        self.pending = plan;
        Ok(())
    }

    /// The next step of the accepted request, entering its state (Busy);
    /// `None` when the request is done.
    pub fn next_step(&mut self) -> Option<Step> {
        if self.pending.is_empty() {
            return None;
        }
        let s = self.pending.remove(0);
        self.state = s.state();
        self.operational = Operational::Busy;
        Some(s)
    }

    /// The step in progress ended. A success leaves Ready (Finish: Idle),
    /// or Busy while the request has more steps (a client waiting for the
    /// request never sees it Ready half-way); a failure leaves Broken, the
    /// rest of the request kept for `retry`.
    pub fn step_done(&mut self, step: Step, ok: bool) {
        if ok {
            self.operational = if self.pending.is_empty() {
                Operational::Ready
            } else {
                Operational::Busy
            };
            if step == Step::Finish {
                self.state = UpgradeState::Idle;
            }
        } else {
            self.operational = Operational::Broken;
            let mut r = vec![step];
            r.append(&mut self.pending);
            self.retry = r;
        }
    }

    /// A machine Broken in `state`, `retry` running `steps`.
    pub fn failed(state: UpgradeState, steps: Vec<Step>) -> Machine {
        Machine {
            state,
            operational: Operational::Broken,
            retry: steps,
            pending: Vec::new(),
        }
    }

    /// Puts the machine where a hand-over says the upgrade is (the Upgrade
    /// side takes over the state at Merge).
    pub fn restore(state: UpgradeState, operational: Operational) -> Machine {
        Machine {
            state,
            operational,
            retry: Vec::new(),
            pending: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `c` to the end, every step ending as `ok` says.
    fn run(m: &mut Machine, c: Command, ok: impl Fn(Step) -> bool) -> Result<Vec<Step>, Refused> {
        m.request(c)?;
        let mut ran = Vec::new();
        while let Some(s) = m.next_step() {
            assert_eq!(m.operational(), Operational::Busy);
            assert_eq!(m.state(), s.state());
            ran.push(s);
            let good = ok(s);
            m.step_done(s, good);
            if !good {
                break;
            }
        }
        Ok(ran)
    }

    fn at(m: &Machine) -> (UpgradeState, Operational) {
        (m.state(), m.operational())
    }

    #[test]
    fn the_whole_upgrade_in_order() {
        let mut m = Machine::new();
        let all = |_| true;
        assert_eq!(
            run(&mut m, Command::Check, all).unwrap(),
            [Step::CheckReadiness]
        );
        assert_eq!(at(&m), (UpgradeState::Idle, Operational::Ready));
        assert_eq!(
            run(&mut m, Command::Split, all).unwrap(),
            [Step::PrepareSplit, Step::ExecuteSplit]
        );
        assert_eq!(at(&m), (UpgradeState::Split, Operational::Ready));
        assert!(m.split());
        assert_eq!(
            run(&mut m, Command::Merge, all).unwrap(),
            [Step::PrepareMerge, Step::ExecuteMerge]
        );
        assert_eq!(at(&m), (UpgradeState::Merge, Operational::Ready));
        assert!(!m.split());
        run(&mut m, Command::Commit, all).unwrap();
        assert_eq!(at(&m), (UpgradeState::Commit, Operational::Ready));
        run(&mut m, Command::Finish, all).unwrap();
        assert_eq!(at(&m), (UpgradeState::Idle, Operational::Ready));
    }

    #[test]
    fn abort_from_every_state_before_commit() {
        for expect in [
            UpgradeState::PrepareSplit,
            UpgradeState::Split,
            UpgradeState::PrepareMerge,
            UpgradeState::Merge,
        ] {
            let mut m = Machine::new();
            // Reach `expect`, Broken (a failing step) or Ready.
            match expect {
                UpgradeState::PrepareSplit => {
                    run(&mut m, Command::Split, |s| s != Step::PrepareSplit).unwrap();
                }
                UpgradeState::Split => {
                    run(&mut m, Command::Split, |_| true).unwrap();
                }
                UpgradeState::PrepareMerge => {
                    run(&mut m, Command::Split, |_| true).unwrap();
                    run(&mut m, Command::Merge, |s| s != Step::PrepareMerge).unwrap();
                }
                _ => {
                    run(&mut m, Command::Split, |_| true).unwrap();
                    run(&mut m, Command::Merge, |_| true).unwrap();
                }
            }
            assert_eq!(m.state(), expect);
            assert_eq!(
                run(&mut m, Command::Abort, |_| true).unwrap(),
                [Step::Abort]
            );
            assert_eq!(at(&m), (UpgradeState::Abort, Operational::Ready));
            run(&mut m, Command::Finish, |_| true).unwrap();
            assert_eq!(at(&m), (UpgradeState::Idle, Operational::Ready));
        }
    }

    #[test]
    fn a_failed_step_is_broken_until_retry_and_retry_finishes_the_request() {
        let mut m = Machine::new();
        let ran = run(&mut m, Command::Split, |s| s != Step::ExecuteSplit).unwrap();
        assert_eq!(ran, [Step::PrepareSplit, Step::ExecuteSplit]);
        assert_eq!(at(&m), (UpgradeState::Split, Operational::Broken));
        assert_eq!(m.failed_step(), Some(Step::ExecuteSplit));
        // Nothing moves on while Broken.
        let before = m.clone();
        assert!(run(&mut m, Command::Merge, |_| true).is_err());
        assert_eq!(m, before);
        assert_eq!(
            run(&mut m, Command::Retry, |_| true).unwrap(),
            [Step::ExecuteSplit]
        );
        assert_eq!(at(&m), (UpgradeState::Split, Operational::Ready));

        // A failure in PrepareSplit: retry runs it and then ExecuteSplit.
        let mut m = Machine::new();
        run(&mut m, Command::Split, |s| s != Step::PrepareSplit).unwrap();
        assert_eq!(at(&m), (UpgradeState::PrepareSplit, Operational::Broken));
        assert_eq!(
            run(&mut m, Command::Retry, |_| true).unwrap(),
            [Step::PrepareSplit, Step::ExecuteSplit]
        );
        assert_eq!(at(&m), (UpgradeState::Split, Operational::Ready));
    }

    #[test]
    fn a_failed_readiness_check_is_broken_in_idle() {
        let mut m = Machine::new();
        run(&mut m, Command::Check, |_| false).unwrap();
        assert_eq!(at(&m), (UpgradeState::Idle, Operational::Broken));
        let e = m.plan(Command::Split).unwrap_err().to_string();
        assert!(e.contains("Idle") && e.contains("Broken"), "{e}");
        // Another check is fine (another binary, say).
        assert_eq!(m.plan(Command::Check), Ok(vec![Step::CheckReadiness]));
        // Abort has nothing to abort in Idle; retry runs the check again.
        assert!(m.plan(Command::Abort).is_err());
        run(&mut m, Command::Retry, |_| true).unwrap();
        assert_eq!(at(&m), (UpgradeState::Idle, Operational::Ready));
    }

    #[test]
    fn abort_works_from_broken() {
        let mut m = Machine::new();
        run(&mut m, Command::Split, |_| true).unwrap();
        run(&mut m, Command::Merge, |s| s != Step::ExecuteMerge).unwrap();
        assert_eq!(at(&m), (UpgradeState::Merge, Operational::Broken));
        run(&mut m, Command::Abort, |_| true).unwrap();
        assert_eq!(at(&m), (UpgradeState::Abort, Operational::Ready));
    }

    #[test]
    fn illegal_requests_are_refused_naming_the_state_and_change_nothing() {
        let idle = Machine::new();
        let mut split = Machine::new();
        run(&mut split, Command::Split, |_| true).unwrap();
        let mut committed = split.clone();
        run(&mut committed, Command::Merge, |_| true).unwrap();
        run(&mut committed, Command::Commit, |_| true).unwrap();
        let cases = [
            (&idle, Command::Merge, "Idle"),
            (&idle, Command::Commit, "Idle"),
            (&idle, Command::Abort, "Idle"),
            (&idle, Command::Finish, "Idle"),
            (&idle, Command::Retry, "Idle"),
            // Skipping a state.
            (&split, Command::Commit, "Split"),
            (&split, Command::Split, "Split"),
            (&split, Command::Check, "Split"),
            (&split, Command::Finish, "Split"),
            (&committed, Command::Abort, "Commit"),
            (&committed, Command::Merge, "Commit"),
        ];
        for (m, c, state) in cases {
            let mut m2 = m.clone();
            let e = m2.request(c).unwrap_err().to_string();
            assert!(
                e.contains(&format!("state {state}")) && e.contains(c.verb()),
                "{c:?}: {e}"
            );
            assert_eq!(&m2, m, "{c:?} changed the machine");
            assert_eq!(m2.next_step(), None);
        }
    }

    #[test]
    fn nothing_is_accepted_while_busy() {
        let mut m = Machine::new();
        m.request(Command::Split).unwrap();
        let s = m.next_step().unwrap();
        for c in Command::ALL {
            let e = m.plan(*c).unwrap_err().to_string();
            assert!(e.contains("Busy"), "{e}");
        }
        m.step_done(s, true);
        // Between two steps of one request: still Busy, still refused.
        assert_eq!(m.operational(), Operational::Busy);
        assert!(m.plan(Command::Abort).is_err());
        assert_eq!(m.next_step(), Some(Step::ExecuteSplit));
        m.step_done(Step::ExecuteSplit, true);
        assert_eq!(
            (m.state(), m.operational()),
            (UpgradeState::Split, Operational::Ready)
        );
    }

    #[test]
    fn names_round_trip() {
        for s in UpgradeState::ALL {
            assert_eq!(UpgradeState::parse(s.name()), Some(*s));
        }
        assert_eq!(Request::parse("ExecuteMerge"), Some(Request::ExecuteMerge));
        assert_eq!(Side::parse("upgrade"), None);
    }
}
