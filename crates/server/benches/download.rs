//! How fast evidence leaves the gateway, beside nginx serving the same file on the same loopback, in the same run.
//!
//! `cargo bench -p custodia-server --bench download` starts the release `custodia` binary on a loopback port with a
//! fresh data directory on the real disk, sets it up through the HTTP API (an account, a case, a membership, an
//! API token) and uploads a pseudo-random file (1 GiB) once. Then, with curl writing to `/dev/null`, it takes the
//! best of several runs of:
//! - the content download (`GET .../content`), whole and as one Range (its second half);
//! - a court bundle export of the artefact (`POST .../exports`) and a case export (`POST /cases/.../exports`),
//!   each a tar of the payload and its custody records, each recorded in the ledger before its first byte;
//! - nginx (Debian's `nginx-light`, `sendfile on`) serving the gateway's own stored object on another loopback
//!   port, fetched by the same curl: the peer every figure is judged against (goal: at least 0.8 of it);
//! - `cat` of the same object from the page cache to `/dev/null`: what reading alone costs.
//!
//! It then has 20 people sign in at once, each from an address of their own (each an argon2id check of 19 MiB),
//! and reports the gateway's peak resident memory (`VmHWM`) over the whole run against the budget of 100 MiB,
//! with no environment variable set.
//!
//! Tuning, by environment variable: `DOWNLOAD_BENCH_BYTES` (the file's size, 1073741824), `DOWNLOAD_BENCH_RUNS`
//! (runs of each transfer, 3). Without nginx installed (`./x bench` installs it) its rows say so.
#![allow(clippy::print_stdout)]

mod gateway;

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, env_or, mb_per_s, rate, size_text, write_pseudo_random,
};
use gateway::{CASE, PASSWORD, Server, sample, set_up, sha256sum, upload};
use serde_json::Value;

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_RUNS: usize = 3;
/// Each transfer at least this share of nginx's speed.
const GOAL_RATIO: f64 = 0.8;
/// Peak resident memory of the gateway below this.
const GOAL_PEAK_RSS: u64 = 100 << 20;
/// Sign-ins at once, for the memory figure.
const SIGN_INS: usize = 20;

fn main() -> Result<(), BoxError> {
    let bytes: u64 = env_or("DOWNLOAD_BENCH_BYTES", DEFAULT_BYTES)?;
    let runs: usize = env_or("DOWNLOAD_BENCH_RUNS", DEFAULT_RUNS)?.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let binary = Path::new(env!("CARGO_BIN_EXE_custodia"));
    let dir = tempfile::Builder::new().prefix("download-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("custodia download benchmark: {} over loopback HTTP, {runs} runs, {cores} cores", size_text(bytes));

    let input = dir.path().join("evidence.webm");
    write_pseudo_random(&input, bytes, 0xd0_a110ad)?;
    let digest = sha256sum(&input)?;
    let data_dir = dir.path().join("data");
    let mut server = Server::start(binary, &data_dir)?;
    let outcome = measure(&server, dir.path(), &input, &digest, bytes, runs);
    let log = server.stop();
    match outcome {
        Ok(measured) => {
            report(bytes, cores, &measured)?;
            Ok(())
        }
        Err(err) => {
            println!("the benchmark failed: {err}\n-- gateway log --\n{log}");
            Err(err)
        }
    }
}

/// The best of several runs of one transfer, in bytes per second.
struct Best {
    what: String,
    bytes: u64,
    rates: Vec<f64>,
}

impl Best {
    fn rate(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    fn runs_text(&self) -> String {
        let runs: Vec<String> = self.rates.iter().map(|rate| format!("{:.0}", rate / 1e6)).collect();
        runs.join(", ")
    }
}

struct Measured {
    gateway: Vec<Best>,
    nginx: Option<Best>,
    cat: Best,
    /// VmHWM before the downloads, after them, and after the sign-ins.
    peak_before: u64,
    peak_after_downloads: u64,
    peak_after_sign_ins: u64,
}

fn measure(
    server: &Server,
    dir: &Path,
    input: &Path,
    digest: &str,
    bytes: u64,
    runs: usize,
) -> Result<Measured, BoxError> {
    let token = set_up(server, dir)?;
    upload(server, dir, input, digest, bytes, &token)?;
    let uploaded: Value = serde_json::from_str(&fs::read_to_string(dir.join("response.json"))?)?;
    let id = gateway::text_field(&uploaded, "artefact")?;
    let object = data_dir_object(&server.data_dir, digest);
    println!("uploaded {} as {id}; stored at {}", size_text(bytes), object.display());
    let peak_before = sample(server.pid())?.hwm;

    let authorization = format!("Authorization: Bearer {token}");
    let base = &server.base;
    let purpose = "purpose=download%20benchmark";
    let half = bytes / 2;
    let range = format!("Range: bytes={half}-");
    let content = format!("{base}/api/v1/artefacts/{id}/content?{purpose}");
    let export = format!("{base}/api/v1/artefacts/{id}/exports?{purpose}");
    let case_export = format!("{base}/api/v1/cases/{CASE}/exports?{purpose}");
    type Transfer<'a> = (&'a str, &'a str, Vec<&'a str>, u16, Option<u64>);
    let transfers: [Transfer; 4] = [
        ("download, whole (GET .../content)", &content, vec!["-H", &authorization], 200, Some(bytes)),
        ("download, second half (Range)", &content, vec!["-H", &authorization, "-H", &range], 206, Some(bytes - half)),
        ("artefact bundle export (tar)", &export, vec!["-X", "POST", "-H", &authorization], 200, None),
        ("case export (tar)", &case_export, vec!["-X", "POST", "-H", &authorization], 200, None),
    ];
    let mut gateway = Vec::new();
    for (what, url, args, status, expected) in transfers {
        let mut best = Best { what: what.into(), bytes: 0, rates: Vec::new() };
        for _ in 0..runs {
            let (got, size, elapsed) = fetch(url, &args)?;
            if got != status || expected.is_some_and(|expected| expected != size) || size < bytes - half {
                return Err(format!("{what}: HTTP {got}, {size} bytes").into());
            }
            best.bytes = size;
            best.rates.push(rate(size, elapsed));
        }
        println!("{what}: {} (runs, MB/s: {})", mb_per_s(best.rate()), best.runs_text());
        gateway.push(best);
    }
    let peak_after_downloads = sample(server.pid())?.hwm;

    let nginx = match Nginx::start(&object, dir)? {
        Some(nginx) => {
            let url = format!("{}/{}", nginx.base, digest);
            let mut best = Best { what: "nginx, sendfile, same object".into(), bytes, rates: Vec::new() };
            for _ in 0..runs {
                let (got, size, elapsed) = fetch(&url, &[])?;
                if got != 200 || size != bytes {
                    return Err(format!("nginx: HTTP {got}, {size} bytes").into());
                }
                best.rates.push(rate(size, elapsed));
            }
            println!("{}: {} (runs, MB/s: {})", best.what, mb_per_s(best.rate()), best.runs_text());
            Some(best)
        }
        None => {
            println!("nginx: not installed (Debian's nginx-light; ./x bench installs it); no peer figure");
            None
        }
    };
    let mut cat = Best { what: "cat from the page cache".into(), bytes, rates: Vec::new() };
    for _ in 0..runs {
        let started = Instant::now();
        let status = Command::new("cat").arg(&object).stdout(Stdio::null()).status()?;
        if !status.success() {
            return Err(format!("cat {}: {status}", object.display()).into());
        }
        cat.rates.push(rate(bytes, started.elapsed()));
    }
    println!("{}: {}", cat.what, mb_per_s(cat.rate()));

    sign_in_at_once(&server.base, dir, SIGN_INS)?;
    let peak_after_sign_ins = sample(server.pid())?.hwm;
    Ok(Measured { gateway, nginx, cat, peak_before, peak_after_downloads, peak_after_sign_ins })
}

fn data_dir_object(data_dir: &Path, digest: &str) -> PathBuf {
    data_dir.join("objects").join("objects").join("sha256").join(&digest[..2]).join(digest)
}

/// Fetches `url` with curl into `/dev/null`: the status, the bytes received and curl's own transfer time.
fn fetch(url: &str, args: &[&str]) -> Result<(u16, u64, Duration), BoxError> {
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"])
        .args(args)
        .arg(url)
        .output()?;
    if !output.status.success() {
        return Err(format!("curl {url}: {} {}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
    let text = String::from_utf8(output.stdout)?;
    let mut fields = text.split_whitespace();
    let status = fields.next().ok_or("curl printed no status")?.parse()?;
    let size = fields.next().ok_or("curl printed no size")?.parse()?;
    let seconds: f64 = fields.next().ok_or("curl printed no time")?.parse()?;
    Ok((status, size, Duration::from_secs_f64(seconds)))
}

/// `count` people signing in at once, each to an account of their own from an address of their own (127.0.1.n),
/// as a court's staff at the start of a day: the accounts are made first, by the administrator.
fn sign_in_at_once(base: &str, dir: &Path, count: usize) -> Result<(), BoxError> {
    let admin_jar = dir.join("admin.cookies").display().to_string();
    for n in 0..count {
        let person = serde_json::json!({
            "username": format!("person-{n}"), "display_name": format!("Person {n}"), "password": PASSWORD,
            "jurisdiction": "NL",
        });
        gateway::call("POST", &format!("{base}/api/v1/accounts"), &person, &["-b", &admin_jar], 201)?;
    }
    let url = format!("{base}/api/v1/session");
    let started = Instant::now();
    let children: Vec<Child> = (0..count)
        .map(|n| {
            let body = format!(r#"{{"username": "person-{n}", "password": "{PASSWORD}"}}"#);
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                .args(["--interface", &format!("127.0.1.{}", n + 1)])
                .args(["-H", "Content-Type: application/json", "-H", "Sec-Fetch-Site: same-origin"])
                .args(["--data-binary", &body, &url])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        let output = child.wait_with_output()?;
        let status = String::from_utf8_lossy(&output.stdout);
        if status.trim() != "200" {
            return Err(format!("a sign-in answered {status}").into());
        }
    }
    println!("{count} sign-ins at once: all answered 200 within {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// nginx serving one directory on a loopback port, stopped on drop.
struct Nginx {
    child: Child,
    /// The record by which the next test or benchmark stops nginx if this process is killed first.
    _recorded: custodia_tests::leftovers::Recorded,
    base: String,
}

impl Nginx {
    /// Serves the directory holding `object`, or `None` when nginx is not installed.
    fn start(object: &Path, dir: &Path) -> Result<Option<Self>, BoxError> {
        let binary = Path::new("/usr/sbin/nginx");
        if !binary.exists() {
            return Ok(None);
        }
        let root = object.parent().ok_or("the object has no directory")?;
        let prefix = dir.join("nginx");
        fs::create_dir_all(prefix.join("logs"))?;
        let port = custodia_tests::free_port();
        let config = prefix.join("nginx.conf");
        fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log stderr;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
                 \x20 client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n\
                 \x20 uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n\
                 \x20 server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
                pid = prefix.join("nginx.pid").display(),
                tmp = prefix.display(),
                root = root.display(),
            ),
        )?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let _recorded = custodia_tests::leftovers::record(child.id(), &prefix);
        let mut nginx = Self { child, _recorded, base: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                return Err(format!("nginx exited at start: {status}").into());
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err("nginx did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(nginx))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(bytes: u64, cores: usize, measured: &Measured) -> Result<(), BoxError> {
    let verdict = |met: bool| if met { "meets goal" } else { "MISSES goal" };
    let nginx = measured.nginx.as_ref().map(Best::rate);
    let mut table = Table::new(["measurement", "this run (best)", "nginx, same file", "ratio"]);
    let mut headlines = Vec::new();
    for best in &measured.gateway {
        let (against, ratio) = match nginx {
            Some(nginx) => {
                let ratio = best.rate() / nginx;
                (mb_per_s(nginx), format!("{ratio:.2} ({}: >= {GOAL_RATIO})", verdict(ratio >= GOAL_RATIO)))
            }
            None => ("n/a (no nginx)".into(), "n/a".into()),
        };
        let figure = format!("{} ({})", mb_per_s(best.rate()), size_text(best.bytes));
        table.row([best.what.clone(), format!("{figure}; runs: {}", best.runs_text()), against.clone(), ratio.clone()]);
        headlines.push(Headline { measurement: best.what.clone(), figure, against: format!("nginx {against}"), ratio });
    }
    if let Some(nginx) = &measured.nginx {
        table.row([nginx.what.clone(), format!("runs: {}", nginx.runs_text()), mb_per_s(nginx.rate()), "1.00".into()]);
    }
    let cat = measured.cat.rate();
    table.row([measured.cat.what.clone(), format!("runs: {}", measured.cat.runs_text()), mb_per_s(cat), String::new()]);
    let peak = measured.peak_after_sign_ins;
    let memory = format!(
        "before downloads {}, after {}, after {SIGN_INS} sign-ins {}",
        size_text(measured.peak_before),
        size_text(measured.peak_after_downloads),
        size_text(peak)
    );
    table.row([
        "gateway peak RSS (VmHWM), whole run".into(),
        memory,
        format!("budget {}", size_text(GOAL_PEAK_RSS)),
        verdict(peak <= GOAL_PEAK_RSS).into(),
    ]);
    headlines.push(Headline {
        measurement: format!("peak RSS: set-up, 1 GiB upload, downloads, {SIGN_INS} sign-ins at once"),
        figure: size_text(peak),
        against: format!("budget {}", size_text(GOAL_PEAK_RSS)),
        ratio: format!("{:.2}", peak as f64 / GOAL_PEAK_RSS as f64),
    });
    println!("\n== custodia download, {} on {cores} cores: results ==", size_text(bytes));
    table.print();
    add_to_summary("download", &headlines)?;
    Ok(())
}
