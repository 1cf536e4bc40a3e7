//! `faultbridge sim device`: the driver's char device served as a FUSE
//! file, with its control socket, for the tests that read the device.

use crate::{TempDir, binary};
use faultbridge::sim::device::DeviceControl;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `faultbridge sim device` process and its control socket.
#[allow(missing_debug_implementations)]
pub struct SimDevice {
    child: Child,
    pub device: PathBuf,
    pub control: DeviceControl,
    _dir: Option<TempDir>,
}

impl SimDevice {
    /// Serves the device in a temporary directory of its own.
    pub fn start(args: &[&str]) -> SimDevice {
        let dir = TempDir::new("simdev");
        let mut sim = SimDevice::start_in(dir.path(), args);
        sim._dir = Some(dir);
        sim
    }

    /// Serves the device under `dir/mnt` (created when missing), its
    /// control socket at `dir/control`: a device stopped and served again
    /// in the same `dir` has the same path.
    pub fn start_in(dir: &Path, args: &[&str]) -> SimDevice {
        assert!(
            Path::new("/dev/fuse").exists(),
            "no /dev/fuse: the emulated char device needs FUSE (the fuse kernel module)"
        );
        let mount = dir.join("mnt");
        if !mount.exists() {
            std::fs::create_dir(&mount).unwrap();
        }
        let _ = std::fs::remove_file(dir.join("control"));
        let mut child = Command::new(binary())
            .args(["sim", "device", "--mount"])
            .arg(&mount)
            .arg("--control")
            .arg(dir.join("control"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("sim device did not get ready ({e}): {line:?}"));
        assert_eq!(ready["type"], "ready");
        let device = PathBuf::from(ready["device"].as_str().unwrap());
        let control =
            DeviceControl::connect(Path::new(ready["control"].as_str().unwrap())).unwrap();
        SimDevice {
            child,
            device,
            control,
            _dir: None,
        }
    }

    pub fn send(&mut self, command: &str) -> String {
        self.control
            .send(command)
            .unwrap_or_else(|e| panic!("sim device: {command}: {e}"))
    }

    /// Stops serving: the device file goes away (as when the driver is
    /// unloaded) and reads of open descriptors fail.
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        self.stop();
    }
}
