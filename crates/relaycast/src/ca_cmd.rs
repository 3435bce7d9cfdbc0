//! `relaycast cluster-ca`: make the cluster CA and node certificates.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::common::cluster_ca::ClusterCa;
use crate::common::signing::write_private;

#[derive(Args, Debug)]
pub struct CaArgs {
    #[command(subcommand)]
    pub action: CaAction,
    /// Folder of the CA (`ca.pem`, `ca.key`).
    #[arg(long, default_value = "cluster-ca", global = true)]
    pub dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum CaAction {
    /// Create the CA: DIR/ca.pem (give it to every node as --cluster-ca) and DIR/ca.key
    /// (secret: keep it where you issue certificates, not on the nodes).
    Init,
    /// Issue a certificate for node NAME: DIR/NAME.pem and DIR/NAME.key, for --node-cert and
    /// --node-key. Issue a new one before it expires and restart the node with it.
    Issue {
        name: String,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Also valid for HTTPS at this host name or IP address (repeatable): issue the
        /// tracker's --tls-cert this way and nodes trust it through --cluster-ca alone.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
}

pub fn run(args: CaArgs) -> Result<()> {
    match args.action {
        CaAction::Init => {
            ClusterCa::generate()?.save(&args.dir)?;
            println!("{}", args.dir.join("ca.pem").display());
        }
        CaAction::Issue { name, days, hosts } => {
            let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if name.is_empty() || name.starts_with('.') || !name.chars().all(valid) || name == "ca" {
                bail!("node name {name:?}: use letters, digits, '-', '_' and '.' (and not \"ca\")");
            }
            let ca = ClusterCa::load(&args.dir)?;
            let (cert, key) = ca.issue(&name, days.max(1), &hosts)?;
            let (cert_path, key_path) = (args.dir.join(format!("{name}.pem")), args.dir.join(format!("{name}.key")));
            if key_path.exists() {
                std::fs::remove_file(&key_path)?;
            }
            write_private(&key_path, key.as_bytes())?;
            std::fs::write(&cert_path, cert)?;
            println!("{}\n{}", cert_path.display(), key_path.display());
        }
    }
    Ok(())
}
