//! The command line: kubectl's global flags (`--kubeconfig`, `--context`, `-n`, `-A`) and the
//! subcommands. Help texts carry examples, and the exit codes a script can rely on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (an empty listing is a success, as with kubectl get)
  1  any other error
  2  bad usage (unknown flag, missing argument)
  3  no cluster: no kubeconfig, unknown context, API server unreachable
  4  no permission: the API server refused the request (401/403)
  5  nothing matched: the named object does not exist
  6  sluice is not installed: the sluice.dev CRDs are absent";

/// `kubectl sluice`: where your pods' log lines go, and whether they arrive.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-sluice",
    bin_name = "kubectl sluice",
    version,
    about = "sluice's kubectl plugin: drain health, which pods feed which drains, and why",
    after_help = EXIT_CODES,
)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags, and where sluice is installed.
#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the pod's
    /// service account).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`). The last one given wins.
    #[arg(
        short = 'n',
        long,
        global = true,
        value_name = "NS",
        overrides_with = "namespace"
    )]
    pub namespace: Option<String>,
    /// The namespace sluice runs in (its collectors' Leases live there).
    #[arg(
        long,
        global = true,
        env = "SLUICE_NAMESPACE",
        default_value = "sluice-system",
        value_name = "NS"
    )]
    pub sluice_namespace: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// LogDrains and their health: Ready, Delivering, lines delivered, failed and dropped, lag,
    /// last error.
    #[command(after_help = "Examples:
  # The drains of the current namespace
  kubectl sluice drains

  # Every drain you may list, in all namespaces
  kubectl sluice drains -A")]
    Drains {
        /// List drains of all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Which pods feed which drains: each LogBinding's selector evaluated against the pods now.
    #[command(after_help = "Examples:
  # Pods feeding drains in namespace shop
  kubectl sluice bindings -n shop")]
    Bindings {
        /// List bindings of all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Why a pod's lines go, or do not go, to each drain of its namespace.
    #[command(after_help = "Examples:
  # Where do web-0's lines go?
  kubectl sluice explain pod/web-0 -n shop

  Reasons: Shipped, NotBound, ContainersFiltered, DrainMissing, DrainNotReady, NotScheduled,
  NotStarted, NodeNotCovered, CoverageUnknown.")]
    Explain {
        /// The pod: `pod/NAME` or `NAME`.
        #[arg(value_name = "pod/NAME")]
        pod: String,
        /// Output format: a table (default) or `json`.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  # bash, for this session
  source <(kubectl-sluice completion bash)

  # zsh
  kubectl-sluice completion zsh > \"${fpath[1]}/_kubectl-sluice\"

  # fish
  kubectl-sluice completion fish > ~/.config/fish/completions/kubectl-sluice.fish")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How `explain` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// One JSON document.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn namespace_and_context_go_anywhere() {
        let cli = Cli::parse_from(["kubectl-sluice", "drains", "-n", "shop", "--context", "kind"]);
        assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.global.context.as_deref(), Some("kind"));
        assert!(matches!(
            cli.command,
            Command::Drains {
                all_namespaces: false
            }
        ));
        let cli = Cli::parse_from(["kubectl-sluice", "-n", "a", "drains", "-n", "b"]);
        assert_eq!(cli.global.namespace.as_deref(), Some("b"));
    }
}
