package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// MoatTag marks the snapshots of moat itself: its store, certificates
// and keys.
const MoatTag = "moat"

// Snapshotter writes a consistent copy of a store to a path;
// *store.SQLite is one.
type Snapshotter interface {
	SnapshotTo(ctx context.Context, path string) error
}

// StagedStore is where moat's store is copied for its backup, under the
// data dir: a fixed path, so that every snapshot holds it at the same
// place.
func StagedStore(dataDir string) string { return filepath.Join(dataDir, "backup", "moat.db") }

// BackupMoat backs moat itself up: a consistent copy of its store, taken
// while moat keeps serving, and the data dir's certificates and keys.
func (r Repo) BackupMoat(ctx context.Context, st Snapshotter, dataDir string, progress func(Progress)) (Summary, error) {
	staged := StagedStore(dataDir)
	if err := os.MkdirAll(filepath.Dir(staged), 0o700); err != nil {
		return Summary{}, fmt.Errorf("backup: %w", err)
	}
	os.Remove(staged) // the last run's copy
	if err := st.SnapshotTo(ctx, staged); err != nil {
		return Summary{}, err
	}
	defer os.Remove(staged)
	paths := []string{staged}
	for _, d := range []string{"certs", "keys"} {
		if _, err := os.Stat(filepath.Join(dataDir, d)); err == nil {
			paths = append(paths, filepath.Join(dataDir, d))
		}
	}
	return r.Backup(ctx, paths, []string{MoatTag}, progress)
}
