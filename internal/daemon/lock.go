package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockPath is the file a running daemon holds locked in its data dir.
func lockPath(dataDir string) string { return filepath.Join(dataDir, "moat.lock") }

// lockDataDir takes the data dir for this daemon alone, before anything in
// it is touched, so that a second daemon on the same data refuses to start
// instead of rewriting state under the first.
func lockDataDir(dataDir string) (unlock func(), err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	f, err := os.OpenFile(lockPath(dataDir), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another moat daemon is running on %s: stop it first, or give this one its own --data-dir", dataDir)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath(dataDir), err)
	}
	return func() { f.Close() }, nil
}

// Running reports whether a daemon holds the data dir, so that a command
// that finds no control socket does not go around a daemon to its store.
func Running(dataDir string) bool {
	f, err := os.Open(lockPath(dataDir))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
