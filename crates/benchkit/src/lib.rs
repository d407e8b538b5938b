//! Helpers for Custodia's benchmark programs (`cargo bench`), which print each figure beside the machine's own
//! limit measured in the same run: `openssl speed`, a plain disk write. Never used by the product.

#![allow(clippy::print_stdout)] // Printing is what a benchmark is for.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A setting from the environment (`_` allowed as a digit separator), or its default.
pub fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(value) => value.replace('_', "").parse().map_err(|_| format!("{name}={value} is not a valid number").into()),
        Err(_) => Ok(default),
    }
}

/// Runs the `ffmpeg` command with `args` (quietly, overwriting, no standard input), failing with its error output;
/// returns that output (where `-benchmark` writes its figures). The peer of the media benchmarks.
pub fn run_ffmpeg(args: &[&str]) -> Result<String, BoxError> {
    let output = Command::new("ffmpeg").args(["-hide_banner", "-nostdin", "-y"]).args(args).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(format!("ffmpeg {} failed: {stderr}", args.join(" ")).into());
    }
    Ok(stderr)
}

/// User + system CPU seconds from `ffmpeg -benchmark`'s last `bench: utime=…s stime=…s rtime=…s` line.
pub fn ffmpeg_cpu_seconds(stderr: &str) -> Result<f64, BoxError> {
    let line = stderr.lines().rev().find(|line| line.starts_with("bench: utime=")).ok_or("no bench: line")?;
    let field = |name: &str| -> Result<f64, BoxError> {
        let value = line.split_whitespace().find_map(|word| word.strip_prefix(name)).ok_or("missing field")?;
        Ok(value.trim_end_matches('s').parse()?)
    };
    Ok(field("utime=")? + field("stime=")?)
}

/// SplitMix64: fast, reproducible pseudo-random bytes, so that data is incompressible and runs comparable.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buffer: &mut [u8]) {
        for word in buffer.chunks_mut(8) {
            let value = self.next_u64().to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
    }
}

const CHUNK: usize = 8 << 20;

/// Writes `bytes` of pseudo-random data to `path`, fsync'd, and returns its SHA-256 as lowercase hex.
pub fn write_pseudo_random(path: &Path, bytes: u64, seed: u64) -> io::Result<String> {
    let mut generator = SplitMix(seed);
    let mut chunk = vec![0; CHUNK];
    let mut hasher = sha2::Sha256::new();
    let mut file = File::create(path)?;
    let mut written = 0;
    while written < bytes {
        let length = (bytes - written).min(CHUNK as u64) as usize;
        generator.fill(&mut chunk[..length]);
        hasher.update(&chunk[..length]);
        file.write_all(&chunk[..length])?;
        written += length as u64;
    }
    // On disk before it is measured against, so that its write-back competes with nothing.
    file.sync_all()?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The disk's sequential write speed in bytes per second: `bytes` written to `path`, then one fsync.
pub fn sequential_write(path: &Path, bytes: u64) -> io::Result<f64> {
    sequential_write_within(path, bytes, Duration::MAX)
}

/// As [`sequential_write`], but the writes stop once `duration` has passed (before `bytes`, on a slow disk); the
/// final fsync is timed all the same.
pub fn sequential_write_within(path: &Path, bytes: u64, duration: Duration) -> io::Result<f64> {
    let mut chunk = vec![0; CHUNK];
    SplitMix(0x5eed_d15c).fill(&mut chunk);
    let started = Instant::now();
    let mut file = File::create(path)?;
    let mut written = 0;
    while written < bytes && started.elapsed() < duration {
        let length = (bytes - written).min(CHUNK as u64) as usize;
        file.write_all(&chunk[..length])?;
        written += length as u64;
    }
    file.sync_all()?;
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(path)?;
    Ok(rate(written, elapsed))
}

/// Runs `openssl speed <args>` and returns what `parse` reads from its standard output; where that is nothing, says
/// why and prints what openssl printed.
pub fn openssl_speed(args: &[&str], parse: impl Fn(&str) -> Option<f64>) -> Option<f64> {
    let output = match Command::new("openssl").arg("speed").args(args).output() {
        Ok(output) => output,
        Err(err) => {
            println!("openssl speed {}: cannot run openssl: {err}", args.join(" "));
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = parse(&stdout);
    if parsed.is_none() {
        println!("openssl speed {}: could not parse its output ({}):", args.join(" "), output.status);
        for line in stdout.lines().chain(String::from_utf8_lossy(&output.stderr).lines()) {
            println!("    {line}");
        }
    }
    parsed
}

/// Bytes per second for `algorithm` at `block`-byte blocks, from `openssl speed`'s table.
pub fn openssl_rate(stdout: &str, algorithm: &str, block: u64) -> Option<f64> {
    let header = stdout.lines().find(|line| line.starts_with("type"))?;
    let column =
        header.split_whitespace().filter_map(|word| word.parse::<u64>().ok()).position(|size| size == block)?;
    let row = stdout.lines().find(|line| line.split_whitespace().next() == Some(algorithm))?;
    let value = row.split_whitespace().nth(1 + column)?;
    Some(value.strip_suffix('k')?.parse::<f64>().ok()? * 1000.0)
}

/// The sum of two adjacent clock-tick fields of a `/proc/<pid>/stat` file, counted from 1 as in proc(5): 14 gives
/// the process's own user + system time, 16 its waited-for children's.
pub fn cpu_ticks(path: &str, first: usize) -> io::Result<u64> {
    let stat = fs::read_to_string(path)?;
    // Fields after the command name, which is in parentheses and may hold spaces; field 3 (state) comes first.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = rest.split_whitespace().map(|word| word.parse().unwrap_or(0)).collect();
    let at = |number: usize| fields.get(number - 3).copied().unwrap_or(0);
    Ok(at(first) + at(first + 1))
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 where that cannot be read), the unit of [`cpu_ticks`].
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU time (user + system, all threads) this process has used so far, in seconds: what `getrusage` reports,
/// read from `/proc/self/stat`.
pub fn process_cpu_seconds() -> io::Result<f64> {
    Ok(cpu_ticks("/proc/self/stat", 14)? as f64 / clock_ticks_per_second())
}

/// The CPU time (user + system) process `root` and every process under it have used so far, in seconds, counting
/// children that have exited and were waited for (a database server's closed backends): what a server and its
/// workers cost, read from `/proc`. 0 for a process that is gone.
pub fn process_tree_cpu_seconds(root: u32) -> f64 {
    let ticks: u64 = process_tree(root)
        .iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/stat");
            cpu_ticks(&path, 14).unwrap_or(0) + cpu_ticks(&path, 16).unwrap_or(0)
        })
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// Process `root` and every process under it, read from `/proc`.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        parents.push((pid, parent.unwrap_or(0)));
    }
    let mut tree = vec![root];
    let mut at = 0;
    while let Some(&pid) = tree.get(at) {
        tree.extend(parents.iter().filter(|(_, parent)| *parent == pid).map(|(child, _)| *child));
        at += 1;
    }
    tree
}

/// Keeps process `root`, every process under it and all their threads on the CPUs `cpus` (a list as `taskset`
/// takes it: "0", "2-3"), with util-linux's `taskset`. Processes and threads they start later inherit it.
pub fn pin_process_tree(root: u32, cpus: &str) -> io::Result<()> {
    for pid in process_tree(root) {
        let output = Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid.to_string()]).output()?;
        // A process that exited meanwhile has nothing left to pin.
        if !output.status.success() && fs::metadata(format!("/proc/{pid}")).is_ok() {
            let reason = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(io::Error::other(format!("taskset could not pin process {pid} to CPUs {cpus}: {reason}")));
        }
    }
    Ok(())
}

/// How many per second: `count` things (operations, bytes) in `elapsed`.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn mb_per_s(bytes_per_second: f64) -> String {
    format!("{:.0} MB/s", bytes_per_second / 1e6)
}

pub fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

/// A Markdown table, columns padded to their widest cell.
#[derive(Debug)]
pub struct Table<const N: usize> {
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    pub fn new(header: [&str; N]) -> Self {
        Self { rows: vec![header.map(str::to_owned)] }
    }

    pub fn row(&mut self, row: [String; N]) {
        self.rows.push(row);
    }

    pub fn print(&self) {
        let widths: Vec<usize> =
            (0..N).map(|column| self.rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0)).collect();
        for (number, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            println!("| {} |", cells.join(" | "));
            if number == 0 {
                let rules: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
                println!("|-{}-|", rules.join("-|-"));
            }
        }
    }
}

/// The environment variable naming the file where benchmarks add their headline figures, one line each, for the
/// table that `./x bench` ends with (`bench-summary`). Unset, nothing is added.
pub const SUMMARY_ENV: &str = "CUSTODIA_BENCH_SUMMARY";

/// One headline figure: what was measured, the figure, the peer or limit it is judged against (measured in the
/// same run, or a goal), and the ratio between them.
#[derive(Debug, Clone)]
pub struct Headline {
    pub measurement: String,
    pub figure: String,
    pub against: String,
    pub ratio: String,
}

/// Adds `bench`'s headline figures to the summary file named by [`SUMMARY_ENV`], if any: tab-separated lines,
/// tabs and line breaks in a cell made spaces.
pub fn add_to_summary(bench: &str, headlines: &[Headline]) -> io::Result<()> {
    let Some(path) = std::env::var_os(SUMMARY_ENV) else { return Ok(()) };
    let clean = |cell: &str| cell.replace(['\t', '\n', '\r'], " ");
    let mut text = String::new();
    for line in headlines {
        let cells = [bench, &line.measurement, &line.figure, &line.against, &line.ratio];
        text.push_str(&cells.map(clean).join("\t"));
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    io::Write::write_all(&mut file, text.as_bytes())
}

/// Reads a summary file ([`add_to_summary`]) back as a table.
pub fn summary_table(text: &str) -> Table<5> {
    let mut table = Table::new(["benchmark", "measurement", "this run", "peer or limit (same run)", "ratio"]);
    for line in text.lines().filter(|line| !line.is_empty()) {
        let mut cells = line.split('\t').map(str::to_owned);
        table.row(std::array::from_fn(|_| cells.next().unwrap_or_default()));
    }
    table
}
