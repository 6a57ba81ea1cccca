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
    /// Lines of many pods at once, merged by time and prefixed with pod/container, through
    /// sluice's logs API: the collectors' recent lines, or (-f) the lines as they are read. You
    /// see a namespace's lines only if you may `kubectl logs` there (get pods/log).
    #[command(after_help = "Examples:
  # The recent lines of one pod, and of a deleted one
  kubectl sluice logs web-0 -n shop
  kubectl sluice logs web-0 -n shop --recent

  # Follow every pod of a deployment, with timestamps
  kubectl sluice logs deploy/web -f --timestamps

  # The last 100 lines of the pods labelled app=web, in every namespace you may read
  kubectl sluice logs -l app=web -A --tail 100

  # The same, deleted pods that were labelled app=web included (as a deployment's former pods)
  kubectl sluice logs -l app=web -A --tail 100 --recent
  kubectl sluice logs deploy/web --recent

  # Every pod of the namespace, as JSON lines, from the last 10 minutes
  kubectl sluice logs --since 10m -o json

  Without -f, the recent lines the collectors keep (by default the last 1000 of each container,
  also for an hour after it is gone) are printed, merged by time. With -f, lines are printed as
  the collectors read them (a follow has no time limit: the operator follows each collector
  again from where its follow ended); with -f and --recent or --tail, the recent lines come
  first (a line read at that moment may show twice or not at all). --recent with -l or a
  workload matches deleted pods by the labels the collectors kept with their lines.")]
    Logs(LogsArgs),
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

/// What `logs` prints.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").args(["target", "selector"]).multiple(false))]
pub struct LogsArgs {
    /// The pod (`NAME` or `pod/NAME`) or workload (`deploy/NAME`, `sts/NAME`, `job/NAME`,
    /// `rs/NAME`, `ds/NAME`); none: every pod of the namespace.
    #[arg(value_name = "POD | TYPE/NAME")]
    pub target: Option<String>,
    /// Pods with these labels (`app=web,tier!=db`, `tier in (a,b)`, `!canary`); with --recent
    /// also deleted pods that had them (the collectors keep each container's pod labels).
    #[arg(short = 'l', long, value_name = "SELECTOR", value_parser = crate::logs::parse_selector)]
    pub selector: Option<String>,
    /// Every namespace whose pod logs you may read (not with a pod or workload).
    #[arg(short = 'A', long, conflicts_with = "target")]
    pub all_namespaces: bool,
    /// Only this container.
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,
    /// Follow: print lines as they are read, until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Include the lines of pods that are gone (a named pod; the pods a selector or a workload's
    /// selector matched; a deleted workload's pods by the names its controller gives).
    #[arg(long)]
    pub recent: bool,
    /// Only the last N recent lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines newer than this (`30s`, `5m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = crate::logs::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Prefix each line with the runtime's timestamp (RFC 3339).
    #[arg(long)]
    pub timestamps: bool,
    /// Output: `json` prints each line as a JSON object (time, namespace, pod, container,
    /// stream, line).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<LogsOutput>,
}

/// How `logs` prints, besides the default text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogsOutput {
    /// One JSON object per line.
    Json,
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
