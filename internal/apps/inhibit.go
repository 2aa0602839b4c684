package apps

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"
)

// InhibitWhy is what systemd says when it refuses a shutdown for moat.
const InhibitWhy = "the server's termination protection is on: turn it off first with moat host protect off"

// LogindRunning says whether systemd-logind can hold an inhibitor lock
// here, and why not when it cannot.
func LogindRunning() (bool, string) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return false, "systemd is not the init system here (no /run/systemd/system), so no logind holds inhibitor locks"
	}
	if _, err := exec.LookPath("systemd-inhibit"); err != nil {
		return false, "systemd-inhibit is missing (Debian package systemd)"
	}
	if _, err := os.Stat("/run/dbus/system_bus_socket"); err != nil {
		return false, "the system bus is not running (no /run/dbus/system_bus_socket), so logind cannot be asked"
	}
	return true, ""
}

// Inhibitor holds systemd-logind's shutdown inhibitor lock in block mode
// while the host is protected, so that a stray systemctl reboot is
// refused too, and says why.
type Inhibitor struct {
	Log *slog.Logger

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Set takes the lock (on) or lets it go. Where logind does not run it
// does nothing and says so in the log once.
func (in *Inhibitor) Set(on bool) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !on {
		in.release()
		return nil
	}
	if in.cmd != nil {
		select {
		case <-in.done: // it died: take the lock again
			in.cmd = nil
		default:
			return nil
		}
	}
	if ok, why := LogindRunning(); !ok {
		in.log().Warn("host protection: no shutdown inhibitor is held: " + why + "; moat host reboot is still refused")
		return nil
	}
	cmd := exec.Command("systemd-inhibit", "--what=shutdown", "--mode=block", "--who=moat", "--why="+InhibitWhy, "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("host protection: systemd-inhibit: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return errors.New("host protection: systemd-inhibit ended at once: logind refused the lock")
	case <-time.After(200 * time.Millisecond):
	}
	in.cmd, in.done = cmd, done
	return nil
}

// Held reports whether the lock is held.
func (in *Inhibitor) Held() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return false
	}
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

func (in *Inhibitor) release() {
	if in.cmd == nil {
		return
	}
	in.cmd.Process.Kill()
	<-in.done
	in.cmd = nil
}

func (in *Inhibitor) log() *slog.Logger {
	if in.Log != nil {
		return in.Log
	}
	return slog.Default()
}
