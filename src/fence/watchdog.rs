//! The Linux watchdog device (`/dev/watchdog`), and a stand-in for tests.
//!
//! A character device speaks the kernel's API: opening it starts the timer,
//! `WDIOC_SETTIMEOUT` sets it (whole seconds), `WDIOC_KEEPALIVE` restarts
//! it, and writing `V` before closing stops it ("magic close"). Any other
//! path (a regular file or a FIFO) is a stand-in that records the same
//! calls as text lines — `timeout <seconds>`, `keepalive`, `V` — so the
//! arming, kicking and closing can be tested on machines without a device.
//!
//! Modes (`watchdog.mode`): `off` (no [`Watchdog`] at all), `automatic`
//! (use the device when it opens, warn once when it does not), `required`
//! (a node that cannot arm it must not hold the leader key).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::WatchdogMode;

use super::MIN_WATCHDOG_TIMEOUT;

/// `_IOR('W', 5, int)`.
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;
/// `_IOWR('W', 6, int)`.
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;

/// How the watchdog is set up, from `watchdog:` in the node's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogSettings {
    /// `automatic` or `required` (`off` builds no watchdog).
    pub mode: WatchdogMode,
    /// The device, `/dev/watchdog` by default.
    pub device: PathBuf,
    /// How long the hardware takes from the timeout to a reset: each kick
    /// sets the timeout to what is left of the lease minus this.
    pub reset_time: Duration,
}

enum Kind {
    /// A real watchdog device: ioctls.
    Device,
    /// A file or FIFO standing in for one: text lines.
    StandIn,
}

struct Open {
    file: File,
    kind: Kind,
    /// The timeout last set, whole seconds.
    timeout: Option<u32>,
}

/// One watchdog: closed until the first kick, armed until [`disarm`].
///
/// [`disarm`]: Watchdog::disarm
pub struct Watchdog {
    settings: WatchdogSettings,
    open: Option<Open>,
    /// The last open failure was logged (automatic mode warns once).
    warned: bool,
}

impl Watchdog {
    /// A closed watchdog; `None` for mode `off`.
    pub fn new(settings: WatchdogSettings) -> Option<Watchdog> {
        (settings.mode != WatchdogMode::Off).then_some(Watchdog {
            settings,
            open: None,
            warned: false,
        })
    }

    fn required(&self) -> bool {
        self.settings.mode == WatchdogMode::Required
    }

    fn open_device(&self) -> Result<Open, String> {
        let path = &self.settings.device;
        let named = |e: std::io::Error| {
            format!(
                "cannot open the watchdog device {}: {e} — load a watchdog driver, fix \
                 watchdog.device, or set watchdog.mode to off or automatic",
                path.display()
            )
        };
        let meta = std::fs::metadata(path).map_err(named)?;
        let kind = if meta.file_type().is_char_device() {
            Kind::Device
        } else {
            Kind::StandIn
        };
        // Non-blocking: a FIFO with no reader fails at once (ENXIO)
        // instead of hanging the caller.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .append(matches!(kind, Kind::StandIn))
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(named)?;
        Ok(Open {
            file,
            kind,
            timeout: None,
        })
    }

    /// Arms the watchdog if needed and restarts its timer with a timeout of
    /// `left` (what remains of the lease) minus the reset time, in whole
    /// seconds. `Ok(Some(timeout))` when armed; `Ok(None)` when an
    /// automatic watchdog is unavailable; `Err` when less than
    /// [`MIN_WATCHDOG_TIMEOUT`] would remain, or a required watchdog fails.
    pub fn kick(&mut self, left: Duration) -> Result<Option<Duration>, String> {
        let usable = left.saturating_sub(self.settings.reset_time);
        if usable < MIN_WATCHDOG_TIMEOUT {
            return Err(format!(
                "only {} ms of the lease remain after the watchdog's reset time of {} ms, \
                 too little to arm it",
                usable.as_millis(),
                self.settings.reset_time.as_millis()
            ));
        }
        let secs = u32::try_from(usable.as_secs()).unwrap_or(u32::MAX);
        if self.open.is_none() {
            match self.open_device() {
                Ok(open) => {
                    tracing::info!(device = %self.settings.device.display(), "watchdog armed");
                    self.open = Some(open);
                    self.warned = false;
                }
                Err(e) if self.required() => return Err(e),
                Err(e) => {
                    if !self.warned {
                        tracing::warn!("{e}; running without a watchdog (mode automatic)");
                        self.warned = true;
                    }
                    return Ok(None);
                }
            }
        }
        let result = self.open.as_mut().map_or(Ok(secs), |o| o.kick(secs));
        match result {
            Ok(applied) => Ok(Some(Duration::from_secs(u64::from(applied)))),
            Err(e) => {
                let e = format!(
                    "the watchdog device {} failed: {e}",
                    self.settings.device.display()
                );
                // Leave it open: closing without the magic character would
                // not stop a real device, and a failed kick must not be
                // mistaken for a disarm.
                if self.required() {
                    Err(e)
                } else {
                    tracing::warn!("{e}");
                    Ok(None)
                }
            }
        }
    }

    /// Closes the watchdog with the magic character, stopping its timer.
    pub fn disarm(&mut self) {
        if let Some(mut open) = self.open.take() {
            match open.file.write_all(b"V") {
                Ok(()) => tracing::info!("watchdog disarmed"),
                Err(e) => tracing::warn!(
                    "cannot write the magic close to {}: {e}",
                    self.settings.device.display()
                ),
            }
        }
    }

    /// Whether a required watchdog could be armed now (opened and closed
    /// again with the magic character when it was not armed). `Ok` for
    /// automatic mode.
    pub fn check(&mut self) -> Result<(), String> {
        if !self.required() || self.open.is_some() {
            return Ok(());
        }
        let mut open = self.open_device()?;
        open.file.write_all(b"V").map_err(|e| {
            format!(
                "the watchdog device {} failed: {e}",
                self.settings.device.display()
            )
        })
    }
}

impl Open {
    /// Sets the timeout when it changed, then restarts the timer. Returns
    /// the timeout in force.
    fn kick(&mut self, secs: u32) -> std::io::Result<u32> {
        match self.kind {
            Kind::StandIn => {
                let mut line = String::new();
                if self.timeout != Some(secs) {
                    line.push_str(&format!("timeout {secs}\n"));
                }
                line.push_str("keepalive\n");
                self.file.write_all(line.as_bytes())?;
                self.timeout = Some(secs);
                Ok(secs)
            }
            Kind::Device => {
                let fd = self.file.as_raw_fd();
                if self.timeout != Some(secs) {
                    let mut arg = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
                    // SAFETY: `fd` is an open watchdog device and `arg` a
                    // valid int the ioctl reads and overwrites.
                    if unsafe { libc::ioctl(fd, WDIOC_SETTIMEOUT, &mut arg) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The driver may round. Shorter is fine; longer would
                    // let a hung node outlive its lease.
                    let applied = u32::try_from(arg).unwrap_or(u32::MAX);
                    if applied > secs {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("it applied a timeout of {applied} s where {secs} s was asked"),
                        ));
                    }
                    self.timeout = Some(applied);
                }
                let mut dummy: libc::c_int = 0;
                // SAFETY: as above.
                if unsafe { libc::ioctl(fd, WDIOC_KEEPALIVE, &mut dummy) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(self.timeout.unwrap_or(secs))
            }
        }
    }
}
