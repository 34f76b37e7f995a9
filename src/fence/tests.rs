//! The fencing thread against a hand-driven clock, and the watchdog against
//! a file and a FIFO standing in for `/dev/watchdog`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::WatchdogMode;

#[derive(Default)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> BootInstant {
        BootInstant::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

struct Rig {
    clock: Arc<ManualClock>,
    fences: Arc<AtomicUsize>,
    fencer: Fencer,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn rig(watchdog: Option<Watchdog>) -> Rig {
    let clock = Arc::new(ManualClock::default());
    clock.advance(secs(100.0));
    let fences = Arc::new(AtomicUsize::new(0));
    let f = fences.clone();
    let fencer = Fencer::spawn(
        clock.clone(),
        Box::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
        watchdog,
    )
    .expect("spawn the fencing thread");
    Rig {
        clock,
        fences,
        fencer,
    }
}

impl Rig {
    fn at(&self, s: f64) -> BootInstant {
        self.clock.now() + secs(s)
    }

    /// Waits (in real time, bounded) until the thread fenced `n` times.
    fn wait_fences(&self, n: usize) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if self.fences.load(Ordering::SeqCst) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Gives the thread time to act on the current clock, then reports how
    /// often it fenced.
    fn settle(&self) -> usize {
        std::thread::sleep(MAX_SLEEP * 4);
        self.fences.load(Ordering::SeqCst)
    }
}

#[test]
fn fences_once_when_the_deadline_passes_without_a_renewal() {
    let r = rig(None);
    r.fencer.hold(r.at(4.0)).unwrap();
    r.clock.advance(secs(3.9));
    assert_eq!(r.settle(), 0, "fenced before the deadline");
    r.clock.advance(secs(0.2));
    assert!(r.wait_fences(1), "no fence after the deadline");
    assert_eq!(r.settle(), 1, "fenced more than once for one deadline");
    assert_eq!(r.fencer.fenced(), 1);
}

#[test]
fn renewals_keep_moving_the_deadline() {
    let r = rig(None);
    for _ in 0..5 {
        r.fencer.hold(r.at(4.0)).unwrap();
        r.clock.advance(secs(1.0));
        assert_eq!(r.settle(), 0);
    }
}

#[test]
fn release_before_the_deadline_cancels_but_not_after() {
    let r = rig(None);
    r.fencer.hold(r.at(2.0)).unwrap();
    r.fencer.release();
    r.clock.advance(secs(3.0));
    assert_eq!(r.settle(), 0, "a released deadline still fenced");

    r.fencer.hold(r.at(1.0)).unwrap();
    // The driver runs late: the deadline passed before it released.
    r.clock.advance(secs(1.5));
    r.fencer.release();
    assert!(
        r.wait_fences(1),
        "a passed deadline was cancelled by release"
    );
    // And a late renewal does not move a passed deadline either.
    r.fencer.hold(r.at(1.0)).unwrap();
    r.clock.advance(secs(1.5));
    assert!(r.fencer.hold(r.at(4.0)).is_err());
    assert!(r.wait_fences(2));
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "pgkeel-fence-{name}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn standin(path: &Path, mode: WatchdogMode) -> Option<Watchdog> {
    Watchdog::new(WatchdogSettings {
        mode,
        device: path.to_path_buf(),
        reset_time: secs(1.0),
    })
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn mode_off_builds_no_watchdog() {
    assert!(standin(Path::new("/nonexistent"), WatchdogMode::Off).is_none());
}

#[test]
fn a_file_watchdog_is_armed_kicked_on_renewal_and_closed_with_v() {
    let dir = Scratch::new("file");
    let dev = dir.0.join("watchdog");
    std::fs::write(&dev, "").unwrap();
    let r = rig(standin(&dev, WatchdogMode::Required));
    r.fencer.check_watchdog().unwrap();
    assert_eq!(text(&dev), "V", "the check must open and magic-close it");
    std::fs::write(&dev, "").unwrap();

    // 4 s of lease left, 1 s reset time: a 3 s timeout.
    r.fencer.hold(r.at(4.0)).unwrap();
    assert_eq!(text(&dev), "timeout 3\nkeepalive\n");
    // Holding the same deadline again is not a renewal: no kick.
    r.fencer.hold(r.at(4.0)).unwrap();
    assert_eq!(text(&dev), "timeout 3\nkeepalive\n");
    r.clock.advance(secs(1.0));
    r.fencer.hold(r.at(4.0)).unwrap();
    assert_eq!(text(&dev), "timeout 3\nkeepalive\nkeepalive\n");
    // A slow renewal leaves less: the timeout shrinks with it.
    r.fencer.hold(r.at(3.2)).unwrap();
    assert_eq!(
        text(&dev),
        "timeout 3\nkeepalive\nkeepalive\ntimeout 2\nkeepalive\n"
    );
    r.fencer.release();
    assert!(text(&dev).ends_with("keepalive\nV"), "{}", text(&dev));
    assert_eq!(r.settle(), 0);
}

#[test]
fn a_kick_that_would_leave_under_a_second_fences_instead() {
    let dir = Scratch::new("short");
    let dev = dir.0.join("watchdog");
    std::fs::write(&dev, "").unwrap();
    let r = rig(standin(&dev, WatchdogMode::Automatic));
    let e = r.fencer.hold(r.at(1.8)).unwrap_err();
    assert!(e.contains("too little"), "{e}");
    assert!(r.wait_fences(1), "no fence after a too-short kick");
}

#[test]
fn a_healthy_node_whose_renewals_fail_fences_before_the_watchdog_fires() {
    let dir = Scratch::new("early");
    let dev = dir.0.join("watchdog");
    std::fs::write(&dev, "").unwrap();
    let r = rig(standin(&dev, WatchdogMode::Required));
    // 10 s left: the watchdog gets 9 s and would fire at +9 s; the thread
    // fences and closes it at +8.5 s, before the lease's +10 s.
    r.fencer.hold(r.at(10.0)).unwrap();
    r.clock.advance(secs(8.4));
    assert_eq!(r.settle(), 0);
    r.clock.advance(secs(0.2));
    assert!(r.wait_fences(1));
    let until = Instant::now() + Duration::from_secs(2);
    while !text(&dev).ends_with('V') && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(text(&dev), "timeout 9\nkeepalive\nV");
}

#[test]
fn a_required_watchdog_that_cannot_open_refuses_and_fences() {
    let dir = Scratch::new("missing");
    let dev = dir.0.join("no-such-device");
    let r = rig(standin(&dev, WatchdogMode::Required));
    let e = r.fencer.check_watchdog().unwrap_err();
    assert!(
        e.contains("no-such-device") && e.contains("watchdog.mode"),
        "{e}"
    );
    assert!(r.fencer.hold(r.at(4.0)).is_err());
    assert!(
        r.wait_fences(1),
        "a primary without its required watchdog was not fenced"
    );
}

#[test]
fn an_automatic_watchdog_that_cannot_open_is_skipped() {
    let dir = Scratch::new("auto");
    let r = rig(standin(&dir.0.join("absent"), WatchdogMode::Automatic));
    r.fencer.check_watchdog().unwrap();
    r.fencer.hold(r.at(4.0)).unwrap();
    r.clock.advance(secs(1.0));
    r.fencer.hold(r.at(4.0)).unwrap();
    assert_eq!(r.settle(), 0);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn a_fifo_watchdog_needs_a_reader_and_sees_every_call() {
    use std::io::Read;
    let dir = Scratch::new("fifo");
    let dev = dir.0.join("watchdog.fifo");
    mkfifo(&dev);
    let r = rig(standin(&dev, WatchdogMode::Required));
    // Nobody reads the FIFO: the device does not work, and a required
    // watchdog says so instead of hanging.
    let e = r.fencer.check_watchdog().unwrap_err();
    assert!(e.contains("watchdog.fifo"), "{e}");

    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&dev)
        .unwrap();
    r.fencer.hold(r.at(5.0)).unwrap();
    r.clock.advance(secs(1.0));
    r.fencer.hold(r.at(5.0)).unwrap();
    r.fencer.release();
    let mut got = String::new();
    let until = Instant::now() + Duration::from_secs(2);
    while !got.ends_with('V') && Instant::now() < until {
        let mut buf = [0u8; 256];
        match reader.read(&mut buf) {
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    assert_eq!(got, "timeout 4\nkeepalive\nkeepalive\nV");
    assert_eq!(r.settle(), 0);
}

use std::os::unix::fs::OpenOptionsExt;
