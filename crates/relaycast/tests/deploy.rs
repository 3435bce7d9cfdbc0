//! deploy/ is checked with what this machine has (no container engine, no Kubernetes cluster):
//! the compose cluster's own commands and config files run as real processes (service names and
//! ports mapped to free loopback ports), Prometheus from Debian scrapes them with
//! deploy/prometheus/prometheus.yml and answers every Grafana panel's query, and every metric a
//! panel names is served by a running node; `promtool check config`, `kubernetes-validate
//! --strict` on the manifests, `systemd-analyze verify` on the units, `relaycast check-config`
//! on the configs.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{MEDIA_WAIT, Node, Proc, STARTUP, TempDir, free_tcp_port, http_get, require_ffmpeg, run, wait_until};

const TOKEN: &str = "deploy-test-token";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Panic with an install hint unless `tool` runs.
fn require(tool: &str, args: &[&str], hint: &str) {
    let ok = Command::new(tool).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(ok, "{tool} not found: {hint}");
}

/// A YAML file as JSON (PyYAML, which kubernetes-validate installs, reads it; merge keys too).
fn yaml(path: &Path) -> serde_json::Value {
    let out = run(Command::new("python3")
        .args(["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(path));
    assert!(out.status.success(), "reading {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Rewrites the compose world onto loopback: service names → 127.0.0.1, 0.0.0.0 → 127.0.0.1,
/// every port → a free one, /etc/relaycast → the test's copy of deploy/config.
struct Loopback {
    services: Vec<String>,
    ports: BTreeMap<u16, u16>,
    config: PathBuf,
}

impl Loopback {
    fn new(services: Vec<String>, texts: &[String], config: PathBuf) -> Self {
        let mut ports = BTreeMap::new();
        for text in texts {
            for (i, _) in text.match_indices(':') {
                let digits: String = text[i + 1..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(p) = digits.parse::<u16>()
                    && p >= 1000
                {
                    ports.entry(p).or_insert_with(free_tcp_port);
                }
            }
        }
        Self { services, ports, config }
    }

    fn map(&self, text: &str) -> String {
        let mut out =
            text.replace("/etc/relaycast", &self.config.display().to_string()).replace("0.0.0.0", "127.0.0.1");
        for s in &self.services {
            out = out.replace(&format!("{s}:"), "127.0.0.1:");
        }
        for (from, to) in &self.ports {
            out = out.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
        }
        out
    }

    /// A command line: `--advertise SERVICE` becomes loopback, the rest is [`Self::map`]ped.
    fn args(&self, args: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in args {
            let advertised = out.last().is_some_and(|p| p == "--advertise") && self.services.contains(a);
            out.push(if advertised { "127.0.0.1".to_string() } else { self.map(a) });
        }
        out
    }

    fn port(&self, compose_port: u16) -> u16 {
        self.ports[&compose_port]
    }
}

/// Metric names a PromQL expression reads (`relaycast_…`, histogram suffixes dropped).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in expr.match_indices("relaycast_") {
        let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        names.push(base.to_string());
    }
    names
}

/// Prometheus's instant query answer (`data.result`), or the error it gave.
fn prom_query(port: u16, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut url = format!("http://127.0.0.1:{port}/api/v1/query?query=");
    for b in expr.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    let r = http_get(&url).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
    if v["status"] != "success" {
        return Err(format!("{expr}: {v}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

#[test]
fn the_compose_cluster_runs_and_prometheus_scrapes_every_panel_metric() {
    require_ffmpeg();
    require("prometheus", &["--version"], "apt-get install -y prometheus");
    require("python3", &["-c", "import yaml"], "pip install kubernetes-validate (brings PyYAML)");
    let check =
        run(Command::new("promtool").arg("check").arg("config").arg(deploy().join("prometheus/prometheus.yml")));
    assert!(check.status.success(), "promtool: {}", String::from_utf8_lossy(&check.stdout));

    let tmp = TempDir::new("deploy");
    let compose = yaml(&deploy().join("compose.yaml"));
    let services = compose["services"].as_object().expect("compose services");
    let prometheus_yml = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml")).unwrap();
    let mut texts = vec![prometheus_yml.clone()];
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(deploy().join("config")).unwrap() {
        let path = entry.unwrap().path();
        texts.push(std::fs::read_to_string(&path).unwrap());
        configs.push(path);
    }
    let commands: BTreeMap<String, Vec<String>> = services
        .iter()
        .filter(|(_, s)| s["image"] == "relaycast:latest")
        .map(|(name, s)| {
            let cmd: Vec<String> =
                s["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect();
            (name.clone(), cmd)
        })
        .collect();
    assert_eq!(commands.keys().collect::<Vec<_>>(), ["origin", "relay-1", "relay-2", "tracker"]);
    texts.extend(commands.values().flatten().cloned());
    let world = Loopback::new(services.keys().cloned().collect(), &texts, tmp.join("etc"));
    std::fs::create_dir_all(tmp.join("etc")).unwrap();
    for path in &configs {
        let text = world.map(&std::fs::read_to_string(path).unwrap());
        std::fs::write(tmp.join("etc").join(path.file_name().unwrap()), text).unwrap();
    }

    // The services in compose's dependency order; the token compose passes as RELAYCAST_TOKEN
    // is given as the flag it stands for.
    let start = |name: &str| {
        let mut args = world.args(&commands[name]);
        args.extend(["--token".to_string(), TOKEN.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start(name, &args, name != "tracker")
    };
    let tracker = start("tracker");
    let origin = start("origin");
    let relays = [start("relay-1"), start("relay-2")];

    // A publisher over RTMP, as OBS would (channel and key from config/origin.toml).
    let rtmp = world.port(1935);
    let _obs = support::ffmpeg_publish("obs", "flv", &format!("rtmp://127.0.0.1:{rtmp}/live/cam1?key=change-me-too"));
    for relay in &relays {
        wait_until(MEDIA_WAIT, "each relay to serve the sample channel", || {
            (relay.get("/live/demo/index.m3u8").status == 200).then_some(())
        });
    }
    wait_until(MEDIA_WAIT, "the RTMP channel at the origin", || {
        (origin.get("/live/cam1/index.m3u8").status == 200).then_some(())
    });
    // A steered viewer (steering decisions, segments out to a viewer) and a server-side ABR one.
    let steered = wait_until(MEDIA_WAIT, "the tracker to steer a viewer", || {
        let r = tracker.get("/play/demo?region=eu");
        (r.status == 302).then(|| r.header("location").unwrap().to_string())
    });
    let playlist = http_get(&steered).unwrap().text();
    let segment = playlist.lines().find(|l| l.ends_with(".ts") || l.contains(".ts?")).expect("a segment");
    let base = steered.rsplit_once('/').unwrap().0;
    assert_eq!(http_get(&format!("{base}/{segment}")).unwrap().status, 200);
    assert_eq!(relays[0].get("/live/demo/auto.m3u8").status, 302);

    // Prometheus with the shipped config, mapped to loopback and scraping every second.
    let prom_port = free_tcp_port();
    let prom_config = tmp.join("prometheus.yml");
    std::fs::write(&prom_config, world.map(&prometheus_yml).replace("scrape_interval: 5s", "scrape_interval: 1s"))
        .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", tmp.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null());
    let prometheus = Proc::spawn("prometheus", cmd);
    let jobs = wait_until(STARTUP + MEDIA_WAIT, "Prometheus to scrape all three jobs", || {
        let up = prom_query(prom_port, "sum by (job) (up)").ok()?;
        let series = prom_query(prom_port, "count by (job) ({__name__=~\"relaycast_.+\"})").ok()?;
        (up.len() == 3 && series.len() == 3 && up.iter().all(|r| r["value"][1] != "0")).then_some(series)
    });
    assert!(jobs.len() == 3, "{jobs:?}\n{}", prometheus.log());

    // Every panel's query is valid PromQL, and every metric it reads is served by a node.
    let mut served = String::new();
    for node in [&tracker, &origin, &relays[0], &relays[1]] {
        served.push_str(&node.get("/metrics").text());
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy().join("grafana/dashboards/relaycast.json")).unwrap())
            .unwrap();
    let mut missing = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            prom_query(prom_port, expr).unwrap_or_else(|e| panic!("panel {}: {e}", panel["title"]));
            for name in metric_names(expr) {
                let exported = served.lines().any(|l| l.starts_with(&name) && !l.starts_with('#'));
                if !exported {
                    missing.push(format!("{name} (panel {})", panel["title"]));
                }
            }
        }
    }
    assert!(missing.is_empty(), "panels query metrics no node serves: {missing:#?}");
    // And Prometheus really holds them: the delay histogram of every relay, for one.
    wait_until(MEDIA_WAIT, "Prometheus to hold the delay histogram of the origin and both relays", || {
        let delay = prom_query(prom_port, "count by (node) (relaycast_segment_delay_seconds_bucket)").ok()?;
        (delay.len() >= 3).then_some(())
    });
}

#[test]
fn manifests_units_and_configs_pass_their_checkers() {
    require("kubernetes-validate", &["--version"], "pip install kubernetes-validate");
    require("systemd-analyze", &["--version"], "apt-get install -y systemd");
    let k8s = deploy().join("k8s");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&k8s).unwrap().map(|e| e.unwrap().path()).collect();
    manifests.push(k8s.join("templates/secondary.yaml"));
    manifests.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    assert!(manifests.len() >= 5, "{manifests:?}");
    let out = run(Command::new("kubernetes-validate").args(["--strict", "--quiet"]).args(&manifests));
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Units as installed, the binary where the unit expects it.
    let tmp = TempDir::new("units");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(deploy().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/relaycast "), "{}", path.display());
        assert!(text.contains("NoNewPrivileges=yes") && text.contains("ProtectSystem=strict"), "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().replace("@.service", "@edge-1.service");
        std::fs::write(tmp.join(&name), text.replace("/usr/local/bin/relaycast", env!("CARGO_BIN_EXE_relaycast")))
            .unwrap();
        units.push(name);
    }
    let out = run(Command::new("systemd-analyze").arg("verify").args(&units).current_dir(tmp.path()));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {units:?}:\n{said}");

    // The configs the files mount, as the nodes would read them.
    for entry in std::fs::read_dir(deploy().join("config")).unwrap() {
        let path = entry.unwrap().path();
        let out = run(Command::new(env!("CARGO_BIN_EXE_relaycast"))
            .arg("check-config")
            .arg(&path)
            .env("RELAYCAST_TOKEN", TOKEN));
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }

    // What the Dockerfile copies exists, and it builds the binary it runs.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let root = deploy().join("..");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let source = line.split_whitespace().nth(1).unwrap();
        assert!(root.join(source).exists(), "Dockerfile copies {source}, which is not in the repository");
    }
    assert!(dockerfile.contains("--bin relaycast") && dockerfile.contains("\"/usr/local/bin/relaycast\""));
}
