//! `relaycast sim` as a user runs it: it restarts itself once with glibc's heap on huge pages
//! (issue 21) unless the user set glibc's tunables, and what backs the heap changes the run's
//! speed, never its results.

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

/// MB of the heap on huge pages, from "memory: peak N MB, M MB of it on huge pages (...)".
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
    // How many pages the kernel makes huge depends on the heap's size and layout, and on
    // what memory is free: the test checks what the program decides, the figures in
    // docs/SIMULATOR.md what it gains.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let memory = line(&on, "memory:");
        assert!(memory.ends_with("(GLIBC_TUNABLES=glibc.malloc.hugetlb=1)"), "no restart with huge pages: {memory}");
        let memory = line(&off, "memory:");
        assert!(
            memory.ends_with("(GLIBC_TUNABLES=glibc.malloc.hugetlb=0)"),
            "the user's setting was replaced: {memory}"
        );
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if thp.contains("[madvise]") {
            assert_eq!(huge_mb(&off), 0, "huge pages though the user's GLIBC_TUNABLES said not to:\n{off}");
        }
    }
}
