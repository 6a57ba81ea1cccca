//! `loggen`: writes deterministic, uniquely identifiable log lines (see the library docs), either
//! to stdout/stderr (inside a container, so Docker's json-file driver records them) or straight
//! into a Docker json-file (for tests and benchmarks without Docker).

use std::{
    io::{self, Write},
    process::ExitCode,
    thread,
    time::Duration,
};

use sluice_loggen::{
    LineSpec, Stream,
    json_file::{JsonFileWriter, Rotation},
    parse_range,
};

const HELP: &str = "\
loggen: deterministic log lines for sluice's tests and benchmarks

Every line is `<tag> <seq> <padding>`: the tag names the generator, the sequence number
(zero-padded to 8 digits, counting from --start) makes it unique, and the padding (letters
and digits) brings it to a deterministic length within --size. A test can therefore compute
the exact multiset of lines written from the same options.

USAGE:
    loggen [run] [OPTIONS]              write lines to stdout (and stderr), flushing each line
    loggen json-file --out PATH [OPTIONS]
                                        append Docker json-file entries to PATH (16 KiB splits
                                        and rotation exactly like Docker's json-file driver)
    loggen --help

OPTIONS (both modes):
    --tag T              first word of every line [default: loggen]
    --count N            number of lines; 0 = until killed [run default: 0]
    --lines N            same as --count
    --start S            first sequence number [default: 0]
    --size MIN..MAX      length of ordinary lines in bytes [default: 50..100]
    --stderr-every K     every K-th line (seq % K == K-1) goes to stderr [default: 0 = never]
    --long-every K       every K-th line (seq % K == K-1) is --long-bytes long [default: 0 = never]
    --long-bytes B       length of the long lines [default: 20000]
    --rate R             lines per second; 0 = as fast as possible [run default: 10, json-file: 0]

RUN MODE:
    --exit               exit 0 after --count lines (the default)
    --linger             after --count lines, stay alive until killed (so the container keeps running)

JSON-FILE MODE:
    --out PATH           the log file to append to (required)
    --rotate-bytes B     rotate before the file reaches B bytes, like --log-opt max-size
    --max-files N        files kept, the current one included, like --log-opt max-file [default: 1]

EXAMPLES:
    loggen --tag web --count 1000 --rate 200 --size 80..120 --stderr-every 10
    loggen json-file --out /tmp/c/c-json.log --tag bench --lines 2000000 --size 100..200
";

/// Parsed command line.
struct Options {
    json_file: bool,
    spec: LineSpec,
    count: u64,
    start: u64,
    rate: Option<u64>,
    linger: bool,
    out: Option<String>,
    rotate_bytes: Option<u64>,
    max_files: u32,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h" || a == "help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loggen: {message}\nRun `loggen --help` for the options.");
            return ExitCode::from(2);
        }
    };
    let result = if options.json_file {
        json_file(&options)
    } else {
        run(&options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loggen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut args = args.iter().peekable();
    let json_file = match args.peek().map(|s| s.as_str()) {
        Some("json-file") => {
            args.next();
            true
        }
        Some("run") => {
            args.next();
            false
        }
        _ => false,
    };
    let mut o = Options {
        json_file,
        spec: LineSpec::new("loggen", 50, 100),
        count: 0,
        start: 0,
        rate: None,
        linger: false,
        out: None,
        rotate_bytes: None,
        max_files: 1,
    };
    o.spec.long_bytes = 20_000;
    while let Some(flag) = args.next() {
        if flag == "--exit" || flag == "--linger" {
            o.linger = flag == "--linger";
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: {value:?} is not a whole number"))
        };
        match flag.as_str() {
            "--tag" if value.is_empty() || value.contains(char::is_whitespace) => {
                return Err(format!("--tag: {value:?} must be one non-empty word"));
            }
            "--tag" => o.spec.tag = value.clone(),
            "--count" | "--lines" => o.count = number()?,
            "--start" => o.start = number()?,
            "--size" => (o.spec.min, o.spec.max) = parse_range(value).map_err(|e| format!("--size: {e}"))?,
            "--stderr-every" => o.spec.stderr_every = number()?,
            "--long-every" => o.spec.long_every = number()?,
            "--long-bytes" => o.spec.long_bytes = number()? as usize,
            "--rate" => o.rate = Some(number()?),
            "--out" => o.out = Some(value.clone()),
            "--rotate-bytes" => o.rotate_bytes = Some(number()?),
            "--max-files" => o.max_files = u32::try_from(number()?).map_err(|_| "--max-files: too large")?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.json_file && o.out.is_none() {
        return Err("json-file mode needs --out PATH".into());
    }
    if o.json_file && o.count == 0 {
        return Err("json-file mode needs --lines N (N > 0)".into());
    }
    if o.max_files == 0 {
        return Err("--max-files must be at least 1".into());
    }
    Ok(o)
}

/// Sleeps so that line `index` (counted from 0) is written no earlier than `index / rate` seconds after
/// the start. Uses the wall clock: loggen is a plain thread with no async runtime.
struct Pacer {
    #[allow(
        clippy::disallowed_types,
        reason = "loggen has no tokio runtime; std time is the right clock"
    )]
    start: std::time::Instant,
    rate: u64,
}

impl Pacer {
    #[allow(clippy::disallowed_types, reason = "see the field")]
    fn new(rate: u64) -> Self {
        Self {
            start: std::time::Instant::now(),
            rate,
        }
    }

    fn wait(&self, index: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_nanos(index.saturating_mul(1_000_000_000) / self.rate);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            thread::sleep(ahead);
        }
    }
}

fn run(options: &Options) -> io::Result<()> {
    let pacer = Pacer::new(options.rate.unwrap_or(10));
    let (mut stdout, mut stderr) = (io::stdout().lock(), io::stderr().lock());
    let mut line = String::new();
    // One line per iteration, flushed at once so the runtime's log driver sees it immediately.
    for i in 0.. {
        if options.count > 0 && i >= options.count {
            break;
        }
        pacer.wait(i);
        let seq = options.start + i;
        line.clear();
        options.spec.write_line(seq, &mut line);
        line.push('\n');
        let out: &mut dyn Write = match options.spec.stream(seq) {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    if options.linger {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

fn json_file(options: &Options) -> io::Result<()> {
    let out = options.out.as_deref().unwrap_or_default();
    let rotation = options.rotate_bytes.map(|max_bytes| Rotation {
        max_bytes,
        max_files: options.max_files,
    });
    let mut writer = JsonFileWriter::open(out, rotation)?;
    let pacer = Pacer::new(options.rate.unwrap_or(0));
    let mut line = String::new();
    for i in 0..options.count {
        pacer.wait(i);
        let seq = options.start + i;
        line.clear();
        options.spec.write_line(seq, &mut line);
        writer.write_line(options.spec.stream(seq), &line)?;
    }
    Ok(())
}
