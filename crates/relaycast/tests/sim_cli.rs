//! `relaycast sim` as a user runs it: it restarts itself once with glibc's heap on huge pages
//! (issue 21), and what backs the heap changes the run's speed, never its results.

use std::process::Command;

/// Run tree-1k for 20 simulated seconds; stdout and whether it passed.
fn sim(tunables: Option<&str>) -> (bool, String) {
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tree-1k.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.arg("sim").arg(scenario).args(["--seed", "1", "--duration-s", "20", "--quiet"]);
    cmd.env_remove("GLIBC_TUNABLES");
    if let Some(t) = tunables {
        cmd.env("GLIBC_TUNABLES", t);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or_else(|| panic!("no `{start}` line in:\n{out}"))
}

/// MB of the heap on huge pages, from "memory: peak N MB, M MB of it on huge pages".
fn huge_mb(out: &str) -> u64 {
    let memory = line(out, "memory:");
    let huge = memory.split(", ").nth(1).and_then(|h| h.split(' ').next()).and_then(|n| n.parse().ok());
    huge.unwrap_or_else(|| panic!("unreadable: {memory}"))
}

#[test]
fn huge_pages_change_the_speed_not_the_results() {
    let (ok, on) = sim(None);
    assert!(ok && on.contains("invariants: all held"), "{on}");
    let (ok, off) = sim(Some("glibc.malloc.hugetlb=0"));
    assert!(ok, "{off}");
    assert_eq!(line(&on, "trace hash"), line(&off, "trace hash"), "results differ with the heap on huge pages");
    assert_eq!(huge_mb(&off), 0, "huge pages were used though the user's GLIBC_TUNABLES said not to:\n{off}");
    // The restart can only give huge pages where the system hands them out.
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if cfg!(all(target_os = "linux", target_env = "gnu")) && !thp.is_empty() && !thp.contains("[never]") {
        assert!(huge_mb(&on) > 0, "THP is on ({}), but the run's heap had no huge pages:\n{on}", thp.trim());
    }
}
