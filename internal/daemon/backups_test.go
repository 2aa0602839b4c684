package daemon

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/backup"
	"moat/internal/config"
	"moat/internal/testenv"
)

// TestScheduledBackup: an app with a backup schedule is backed up by the
// daemon on its own, and the metrics say when it last succeeded.
func TestScheduledBackup(t *testing.T) {
	testenv.NeedRestic(t)
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
	// The snapshot is there before the run ends (the retention policy,
	// then the metrics): wait for the metrics.
	var metrics string
	for {
		resp, err := http.Get("http://" + e.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		if strings.Contains(metrics, `moat_backup_last_success_timestamp_seconds{app="wiki"}`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{`moat_backup_last_success_timestamp_seconds{app="wiki"}`, `moat_backup_added_bytes{app="wiki"}`} {
		if !strings.Contains(metrics, want) {
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
