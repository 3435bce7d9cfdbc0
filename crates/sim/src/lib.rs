//! Relaycast's discrete-event simulator: the same `relaycast_core::Node` state machines that run
//! in the tokio shell, driven over simulated links at 1 000–10 000-node scale, faster than real
//! time and deterministically (one seed, one trace hash).
//!
//! - [`scenario`]: the TOML scenario format (`scenarios/*.toml`);
//! - [`topology`]: random geometric graphs, topology files, shortest paths;
//! - [`link`]: latency, FIFO serialisation at a bandwidth, loss as retransmission;
//! - [`faults`]: crash, restart, bounce and partition schedules;
//! - [`flash`]: flash crowds steered by the traffic manager's policy, with and without secondaries;
//! - [`engine`]: the event loop ([`Sim`]): connections and frames (`net`), the stream and
//!   faults (`workload`), whole-network checks and the report (`checks`);
//! - [`metrics`]: invariants (no cycle, delivery, repair time) and figures (delay, tree shape);
//! - [`report`]: the summary table and JSON;
//! - [`trace`]: the trace hash and the optional trace file;
//! - [`swarm`]: viewer-to-viewer sharing at audience scale against a CDN-only baseline.
//!
//! ```no_run
//! let scenario = relaycast_sim::Scenario::load("scenarios/small.toml".as_ref()).unwrap();
//! let report = relaycast_sim::Sim::from_scenario(&scenario, 1).unwrap().run();
//! println!("{report}");
//! assert!(report.ok());
//! ```

#![deny(unsafe_code)]

pub mod engine;
pub mod faults;
pub mod flash;
mod frame;
pub mod link;
pub mod metrics;
mod prefetch;
mod queue;
pub mod report;
pub mod scenario;
pub mod swarm;
pub mod topology;
pub mod trace;

pub use engine::{Logged, Progress, Sim};
pub use faults::Action;
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};
pub use topology::Topology;
