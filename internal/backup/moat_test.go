package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/store"
	"moat/internal/testenv"
)

// TestBackupMoatUnderWrites: moat's store, backed up while a writer
// changes it 100 times a second, restores to a store that opens, passes
// its consistency check, and holds what was written before the backup.
func TestBackupMoatUnderWrites(t *testing.T) {
	testenv.NeedRestic(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dataDir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	os.MkdirAll(filepath.Join(dataDir, "keys"), 0o700)
	os.WriteFile(filepath.Join(dataDir, "keys", "totp.key"), []byte("sealed key"), 0o600)

	var written atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond) // 100 a second
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-tick.C:
				n := written.Add(1)
				if err := st.Record(ctx, store.Entry{Who: "writer", Action: "test.write", Target: fmt.Sprint(n)}); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	before := written.Load()

	r := Repo{URL: filepath.Join(t.TempDir(), "repo"), PasswordFile: filepath.Join(t.TempDir(), "pw")}
	if _, err := NewPassword(r.PasswordFile); err != nil {
		t.Fatal(err)
	}
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	sum, err := r.BackupMoat(ctx, st, dataDir, nil)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatalf("the writer: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if written.Load() < before+20 {
		t.Errorf("the writer made only %d writes around the backup", written.Load()-before)
	}
	if _, err := os.Stat(StagedStore(dataDir)); !os.IsNotExist(err) {
		t.Errorf("the staged copy stays behind: %v", err)
	}
	target := t.TempDir()
	if err := r.Restore(ctx, sum.SnapshotID, target); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(target, StagedStore(dataDir))
	if info, err := os.Stat(restored); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the restored store: %v %v", info, err)
	}
	back, err := store.OpenSQLite(ctx, restored)
	if err != nil {
		t.Fatalf("the restored store does not open: %v", err)
	}
	defer back.Close()
	if err := back.Check(ctx); err != nil {
		t.Errorf("the restored store fails its check: %v", err)
	}
	es, err := back.Activity(ctx, store.Query{Action: "test.write", Limit: 1000})
	if err != nil || int64(len(es)) < before {
		t.Errorf("the restored store holds %d writes, %d were made before the backup: %v", len(es), before, err)
	}
	if b, err := os.ReadFile(filepath.Join(target, dataDir, "keys", "totp.key")); err != nil || string(b) != "sealed key" {
		t.Errorf("the keys: %q %v", b, err)
	}
}
