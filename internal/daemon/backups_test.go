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
	"moat/internal/store"
	"moat/internal/testenv"
)

// TestScheduledBackup: an app with a backup schedule is backed up by the
// daemon on its own, and the metrics say when it last succeeded.
func TestScheduledBackup(t *testing.T) {
	testenv.NeedRestic(t)
	e := startEnv(t)
	ctx := context.Background()
	repo := e.backupRepo(t)
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
	for _, want := range []string{`moat_backup_last_success_timestamp_seconds{app="wiki"}`, `moat_backup_added_bytes{app="wiki"}`, `moat_backup_size_bytes{app="wiki"} 7`} {
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

// TestMissedBackup: a scheduled backup that came due while moat was not
// running is alerted (webhook), logged, and made up for at once rather
// than at the next slot.
func TestMissedBackup(t *testing.T) {
	testenv.NeedRestic(t)
	t.Parallel()
	e := startEnv(t)
	ctx := context.Background()
	alerts := e.webhookAlerts()
	repo := e.backupRepo(t)
	data := filepath.Join(t.TempDir(), "wiki")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "page.md"), []byte("# moat\n"), 0o644)
	// The last backup was three days ago, and the daily one since did
	// not run.
	st, err := store.OpenSQLite(ctx, StorePath(e.dir))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Record(ctx, store.Entry{At: time.Now().Add(-72 * time.Hour), Who: "moat", From: "the backup schedule", Action: "backup.run", Target: "wiki", Detail: "to local"})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	slot := time.Now().UTC().Add(12 * time.Hour).Format("15:04") // far from now: only the missed run can happen
	e.change(func(s *config.State) {
		s.Backup.Repositories = []config.Repository{{Name: "local", URL: repo.URL}}
		s.Apps = append(s.Apps, config.App{Name: "wiki", Domains: []string{e.host("wiki")}, Upstream: e.upstream, Data: []string{data},
			Backup: config.AppBackup{Schedule: "daily " + slot}})
	})
	if a := waitAlert(t, alerts, "backup.missed", 15*time.Second); a.Subject != "wiki" || !strings.Contains(a.Message, "was due at") {
		t.Errorf("alert %+v: want the missed backup of wiki, with when it was due", a)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		snaps, err := repo.Snapshots(ctx, "app:wiki")
		if err == nil && len(snaps) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the missed backup was not made up for: %+v %v", snaps, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var es []store.Entry
	if err := e.client.Do(ctx, "GET", "/v1/activity?action=backup.missed&target=wiki", nil, &es); err != nil || len(es) != 1 {
		t.Errorf("the missed backup in the activity log: %+v %v", es, err)
	}
}

// TestRemoveAndRestoreServe: an app removed with its grace backup stops
// being served by the edge; restored, its data is back byte for byte
// and its routes serve again.
func TestRemoveAndRestoreServe(t *testing.T) {
	testenv.NeedRestic(t)
	t.Parallel()
	e := startEnv(t)
	ctx := context.Background()
	repo := e.backupRepo(t)
	data := filepath.Join(t.TempDir(), "srv", "wiki")
	os.MkdirAll(filepath.Join(data, "pages"), 0o755)
	os.WriteFile(filepath.Join(data, "pages", "index.md"), []byte(strings.Repeat("# moat\n", 500)), 0o644)
	os.WriteFile(filepath.Join(data, "wiki.ini"), []byte("[wiki]\n"), 0o600)
	want := testenv.TreeHash(t, data)
	host := e.host("wiki")
	e.dns.Set(host, loopback)
	e.change(func(s *config.State) {
		s.Backup.Repositories = []config.Repository{{Name: "local", URL: repo.URL}}
		s.Apps = append(s.Apps, config.App{Name: "wiki", Domains: []string{host}, Upstream: e.upstream, Data: []string{data},
			Run: config.Run{Remove: "rm -rf " + data}})
	})
	e.waitCert(host, 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())
	serves := func() bool {
		resp, err := c.Get(e.url(host, "/"))
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Contains(string(b), "hello from "+host)
	}
	if !serves() {
		t.Fatal("the app is not served before its removal")
	}
	if err := e.client.Do(ctx, "DELETE", "/v1/apps/wiki?confirm=wiki", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the remove command did not run: %v", err)
	}
	if serves() {
		t.Error("the edge still serves the removed app")
	}
	if err := e.client.Do(ctx, "POST", "/v1/apps/wiki/restore", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TreeHash(t, data); got != want {
		t.Error("the restored data differs from what was removed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !serves() {
		if time.Now().After(deadline) {
			t.Fatal("the restored app's routes do not serve")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// backupRepo makes the daemon's repositories' password and a local
// repository with it.
func (e *env) backupRepo(t *testing.T) backup.Repo {
	t.Helper()
	if _, err := backup.NewPassword(api.PasswordPath(e.dir)); err != nil {
		t.Fatal(err)
	}
	repo := backup.Repo{URL: filepath.Join(t.TempDir(), "restic"), PasswordFile: api.PasswordPath(e.dir)}
	if err := repo.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return repo
}
