package daemon

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/backup"
	"moat/internal/config"
)

// TestScheduledBackup: an app with a backup schedule is backed up by the
// daemon on its own, and the metrics say when it last succeeded.
func TestScheduledBackup(t *testing.T) {
	if _, err := exec.LookPath("restic"); err != nil {
		t.Fatal("restic is missing (Debian package restic; make test's scripts/test-deps.sh installs it)")
	}
	e := startEnv(t)
	ctx := context.Background()
	if _, err := backup.NewPassword(api.PasswordPath(e.dir)); err != nil {
		t.Fatal(err)
	}
	repo := backup.Repo{URL: filepath.Join(t.TempDir(), "restic"), PasswordFile: api.PasswordPath(e.dir)}
	if err := repo.Init(ctx); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "wiki")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "page.md"), []byte("# moat\n"), 0o644)
	e.change(func(s *config.State) {
		s.Backup.Repositories = []config.Repository{{Name: "local", URL: repo.URL}}
		s.Apps = append(s.Apps, config.App{Name: "wiki", Domains: []string{e.host("wiki")}, Upstream: e.upstream, Data: []string{data},
			Backup: config.AppBackup{Schedule: "every 1s", Keep: config.Keep{Daily: 1}}})
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		snaps, err := repo.Snapshots(ctx, "app:wiki")
		if err == nil && len(snaps) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled backup within 20s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get("http://" + e.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`moat_backup_last_success_timestamp_seconds{app="wiki"}`, `moat_backup_added_bytes{app="wiki"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var es []struct {
		Who    string `json:"who"`
		Action string `json:"action"`
	}
	if err := e.client.Do(ctx, "GET", "/v1/activity?action=backup&target=wiki", nil, &es); err != nil || len(es) == 0 || es[0].Who != "moat" {
		t.Errorf("the scheduled run in the activity log: %+v %v", es, err)
	}
}
