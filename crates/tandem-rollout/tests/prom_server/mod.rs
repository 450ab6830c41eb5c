//! A real Prometheus (Debian's `prometheus` package; `scripts/test.sh`
//! installs it) for the tests that read through it: started on a free
//! loopback port over a fresh data directory, scraping the given targets,
//! and stopped (or killed on drop, if the test fails) by the supervisor.

use std::net::SocketAddr;
use std::time::Duration;

use tandem_control::Supervised;
use tandem_log::conformance::TempDir;

/// The `prometheus` binary on PATH, or a failure saying how to get it.
pub fn prometheus_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not on PATH; this test needs a real \
                 Prometheus: install it with `apt-get install -y prometheus` \
                 (scripts/test.sh does)"
            )
        })
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A running Prometheus.
pub struct PromServer {
    pub proc: Supervised,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl PromServer {
    /// Starts Prometheus scraping `jobs` (job name, its targets) every
    /// `scrape`, and waits until it is ready.
    pub fn start(jobs: &[(&str, Vec<SocketAddr>)], scrape: Duration) -> PromServer {
        let binary = prometheus_binary();
        let dir = TempDir::new("prometheus");
        let port = free_port();
        let ms = scrape.as_millis();
        let mut config = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\nscrape_configs:\n"
        );
        for (job, targets) in jobs {
            let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let mut cmd = std::process::Command::new(&binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut proc = Supervised::start_logged("prometheus", cmd, &dir.path().join("log"))
            .expect("start prometheus");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let ready = proc
            .wait_http_ready(addr, "/-/ready", Duration::from_secs(60))
            .expect("prometheus ready");
        eprintln!("prometheus ready in {} ms", ready.as_millis());
        PromServer {
            proc,
            addr,
            _dir: dir,
        }
    }
}
