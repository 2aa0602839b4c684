package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"moat/internal/backup"
	"moat/internal/config"
	"moat/internal/notify"
)

// BackupInit is what POST /v1/backup/init did.
type BackupInit struct {
	// Password is the repositories' new password, shown this once;
	// empty when it existed already.
	Password string `json:"password,omitempty"`
	Warning  string `json:"warning,omitempty"`
	// Repositories are the names of the repositories made or found.
	Repositories []string `json:"repositories"`
	// Failed are the repositories that could not be made, and why.
	Failed []RepositoryError `json:"failed,omitempty"`
	// SSHKey is moat's public key for SFTP repositories, with SSHHint
	// saying where it goes.
	SSHKey  string `json:"ssh_key,omitempty"`
	SSHHint string `json:"ssh_hint,omitempty"`
}

// BackupRequest is the body of POST /v1/backup/run.
type BackupRequest struct {
	// App is the app to back up; empty for moat itself.
	App string `json:"app,omitempty"`
}

// BackupRun is one repository's outcome of a backup.
type BackupRun struct {
	Repository string         `json:"repository"`
	Summary    backup.Summary `json:"summary"`
	Duration   string         `json:"duration"`
	// Forgotten are the snapshots the retention policy removed after it.
	Forgotten []string `json:"forgotten,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// RepositorySnapshots are one repository's snapshots.
type RepositorySnapshots struct {
	Repository string            `json:"repository"`
	Snapshots  []backup.Snapshot `json:"snapshots"`
	Error      string            `json:"error,omitempty"`
}

func (s *Server) backupRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/backup/init", s.backupInit)
	mux.HandleFunc("POST /v1/backup/run", s.backupRun)
	mux.HandleFunc("GET /v1/backup/snapshots", s.backupSnapshots)
	mux.HandleFunc("POST /v1/backup/restore", s.backupRestore)
	mux.HandleFunc("POST /v1/backup/verify", s.backupVerify)
	mux.HandleFunc("POST /v1/backup/forget", s.backupForget)
}

// ForgetResult is one repository's retention run.
type ForgetResult struct {
	Repository string   `json:"repository"`
	Kept       []string `json:"kept"`
	Removed    []string `json:"removed"`
	Error      string   `json:"error,omitempty"`
}

// backupForget applies the retention policy now, to an app's snapshots
// (or moat's), in every repository; a backup run does it after itself.
func (s *Server) backupForget(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req BackupRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	repos, st, err := s.repos(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	tag, keep := backup.MoatTag, st.Backup.Policy()
	if req.App != "" {
		a, ok := st.App(req.App)
		if !ok {
			s.fail(w, noApp(req.App))
			return
		}
		tag = "app:" + a.Name
		if a.Backup.Keep != (config.Keep{}) {
			keep = a.Backup.Keep
		}
	}
	out := []ForgetResult{}
	for _, rp := range repos {
		f, err := s.repo(rp).Forget(ctx, backup.Keep(keep), tag)
		res := ForgetResult{Repository: rp.Name, Kept: f.Kept, Removed: f.Removed}
		action, detail := "backup.forget", fmt.Sprintf("in %s: kept %d, removed %d (%s)", rp.Name, len(f.Kept), len(f.Removed), strings.Join(f.Removed, ", "))
		if err != nil {
			res.Error, action, detail = err.Error(), "backup.forget_failed", "in "+rp.Name+": "+err.Error()
		}
		s.record(ctx, action, orMoatName(req.App), detail)
		out = append(out, res)
	}
	writeJSON(w, http.StatusOK, out)
}

// orMoatName is what the activity log names a backup's subject by.
func orMoatName(app string) string {
	if app == "" {
		return backup.MoatTag
	}
	return app
}

// RestoreRequest is the body of POST /v1/backup/restore: a snapshot of
// an app (or of moat, with no app) written under a directory of its own,
// never over the live files.
type RestoreRequest struct {
	App string `json:"app,omitempty"`
	// Repository is where the snapshot is; the first repository when
	// empty.
	Repository string `json:"repository,omitempty"`
	// Snapshot is its ID; the newest when empty.
	Snapshot string `json:"snapshot,omitempty"`
	// Target is the directory the files go under, at their full paths;
	// it must be empty or not exist yet.
	Target string `json:"target"`
}

// Restored says where a snapshot went.
type Restored struct {
	Repository string `json:"repository"`
	Snapshot   string `json:"snapshot"`
	Target     string `json:"target"`
}

func (s *Server) backupRestore(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req RestoreRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	repos, _, err := s.repos(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !filepath.IsAbs(req.Target) {
		s.fail(w, &config.FieldError{Field: "target", Value: req.Target, Problem: "is not an absolute path", Fix: "name an empty directory to restore into, like /var/tmp/restore"})
		return
	}
	if entries, err := os.ReadDir(req.Target); err == nil && len(entries) > 0 {
		s.fail(w, &config.FieldError{Field: "target", Value: req.Target, Problem: "is not empty", Fix: "restore into an empty directory: moat never writes over files"})
		return
	}
	rp := repos[0]
	if req.Repository != "" {
		found := false
		for _, x := range repos {
			if x.Name == req.Repository {
				rp, found = x, true
			}
		}
		if !found {
			s.fail(w, &config.FieldError{Field: "repository", Value: req.Repository, Problem: "is not a repository in moat.yaml", Fix: "name one of backup.repositories"})
			return
		}
	}
	tag := backup.MoatTag
	if req.App != "" {
		tag = "app:" + req.App
	}
	repo := s.repo(rp)
	id := req.Snapshot
	if id == "" {
		list, err := repo.Snapshots(ctx, tag)
		if err != nil {
			s.fail(w, err)
			return
		}
		if len(list) == 0 {
			s.fail(w, notFound(fmt.Sprintf("repository %s has no snapshot of %s: moat backup run %s makes one", rp.Name, strings.TrimPrefix(tag, "app:"), req.App)))
			return
		}
		id = list[len(list)-1].Short
	}
	if err := repo.Restore(ctx, id, req.Target); err != nil {
		s.fail(w, err)
		return
	}
	s.record(ctx, "backup.restore", strings.TrimPrefix(tag, "app:"), fmt.Sprintf("snapshot %s from %s into %s", id, rp.Name, req.Target))
	writeJSON(w, http.StatusOK, Restored{Repository: rp.Name, Snapshot: id, Target: req.Target})
}

// VerifyResult is one repository's check.
type VerifyResult struct {
	Repository string `json:"repository"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
}

// backupVerify checks every repository, reading back 5% of its data.
func (s *Server) backupVerify(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	repos, _, err := s.repos(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	var out []VerifyResult
	for _, rp := range repos {
		v := VerifyResult{Repository: rp.Name, OK: true}
		if err := s.repo(rp).Verify(ctx, "5%"); err != nil {
			v.OK, v.Error = false, err.Error()
		}
		action := "backup.verify"
		if !v.OK {
			action = "backup.verify_failed"
		}
		s.record(ctx, action, rp.Name, v.Error)
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// PasswordPath is where the repositories' password is kept.
func PasswordPath(dataDir string) string { return filepath.Join(dataDir, "keys", "restic.password") }

// repos are the configured repositories, or why there are none.
func (s *Server) repos(ctx context.Context) ([]config.Repository, config.State, error) {
	st, _, err := s.Store.State(ctx)
	if err != nil {
		return nil, st, err
	}
	if s.DataDir == "" {
		return nil, st, errors.New("backups are made on the server: run moat backup there")
	}
	if len(st.Backup.Repositories) == 0 {
		return nil, st, &config.FieldError{Field: "backup.repositories", Value: "", Problem: "is empty", Fix: "name where backups go in moat.yaml, like backup: {repositories: [{name: local, url: /var/backups/moat}]}, then moat backup init"}
	}
	if _, err := backup.CheckRestic(ctx, ""); err != nil {
		return nil, st, inputError{err}
	}
	for i, rp := range st.Backup.Repositories {
		if rp.Credentials == "" {
			continue
		}
		if _, err := backup.ReadEnv(rp.Credentials, config.CredentialNames); err != nil {
			return nil, st, &config.FieldError{Field: fmt.Sprintf("backup.repositories[%d].credentials", i), Value: rp.Credentials, Problem: "cannot be used: " + err.Error(),
				Fix: "write the file as NAME=value lines (" + strings.Join(config.CredentialNames, ", ") + "), readable by root only"}
		}
	}
	return st.Backup.Repositories, st, nil
}

func (s *Server) repo(r config.Repository) backup.Repo {
	repo := backup.Repo{URL: r.URL, PasswordFile: PasswordPath(s.DataDir)}
	if r.Credentials != "" {
		// repos checked the file; one gone since fails in restic's words.
		repo.Env, _ = backup.ReadEnv(r.Credentials, config.CredentialNames)
	}
	if t, ok := config.SFTPTarget(r.URL); ok {
		repo.SSH = &backup.SSH{Key: SSHKeyPath(s.DataDir), KnownHosts: filepath.Join(s.DataDir, "keys", "backup_known_hosts"), User: t.User, Host: t.Host, Port: t.Port}
	}
	return repo
}

// SSHKeyPath is moat's own SSH key for sftp: repositories.
func SSHKeyPath(dataDir string) string { return filepath.Join(dataDir, "keys", "backup_ssh_ed25519") }

func (s *Server) backupInit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	repos, _, err := s.repos(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	var out BackupInit
	if _, err := os.Stat(PasswordPath(s.DataDir)); errors.Is(err, os.ErrNotExist) {
		if out.Password, err = backup.NewPassword(PasswordPath(s.DataDir)); err != nil {
			s.fail(w, err)
			return
		}
		out.Warning = "Keep this password somewhere safe, away from this server: without it the backups cannot be read, not even by moat. It is in " + PasswordPath(s.DataDir) + " (0600) and is not shown again."
	}
	// From here the answer is 200 whatever happens, so that a new
	// password is never lost with a repository that failed.
	var sftp []string
	for _, rp := range repos {
		if t, ok := config.SFTPTarget(rp.URL); ok {
			sftp = append(sftp, orUser(t.User)+"@"+t.Host)
		}
	}
	if len(sftp) > 0 {
		host, _ := os.Hostname()
		if out.SSHKey, err = backup.SSHKey(SSHKeyPath(s.DataDir), "moat-backup@"+host); err != nil {
			out.Failed = append(out.Failed, RepositoryError{Repository: "sftp", Error: err.Error()})
		}
		out.SSHHint = "moat reaches SFTP repositories with this key of its own: add it to ~/.ssh/authorized_keys of " + strings.Join(sftp, ", ") + ", then run moat backup init again."
	}
	for _, rp := range repos {
		if err := s.repo(rp).Init(ctx); err != nil {
			out.Failed = append(out.Failed, RepositoryError{Repository: rp.Name, Error: err.Error()})
			continue
		}
		out.Repositories = append(out.Repositories, rp.Name)
	}
	detail := "repositories ready: " + strings.Join(out.Repositories, ", ")
	for _, f := range out.Failed {
		detail += "; " + f.Repository + " failed: " + f.Error
	}
	s.record(ctx, "backup.init", "backup", detail)
	writeJSON(w, http.StatusOK, out)
}

// RepositoryError is a repository that failed, and why.
type RepositoryError struct {
	Repository string `json:"repository"`
	Error      string `json:"error"`
}

func orUser(u string) string {
	if u == "" {
		return "root"
	}
	return u
}

// BackupEvent is one line of a streamed backup (Accept:
// application/x-ndjson): a repository's progress while it runs, then the
// outcome, with the runs or the refusal.
type BackupEvent struct {
	Repository string           `json:"repository,omitempty"`
	Progress   *backup.Progress `json:"progress,omitempty"`
	Done       bool             `json:"done,omitempty"`
	Runs       []BackupRun      `json:"runs,omitempty"`
	Error      *Problem         `json:"error,omitempty"`
}

func (s *Server) backupRun(w http.ResponseWriter, r *http.Request) {
	var req BackupRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if wantsStream(r) {
		out := &stream{w: w, tick: 250 * time.Millisecond}
		runs, err := s.runBackup(r.Context(), req.App, func(repo string, p backup.Progress) {
			out.progress(BackupEvent{Repository: repo, Progress: &p})
		})
		if err != nil && !out.started {
			s.fail(w, err)
			return
		}
		ev := BackupEvent{Done: true, Runs: runs}
		if err != nil {
			_, body := s.problem(err)
			ev.Error = &body.Error
		}
		out.send(ev)
		return
	}
	out, err := s.RunBackup(r.Context(), req.App)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// RunBackup backs an app's data up (or moat itself, for app "") to every
// repository and applies the retention policy; the daemon's schedule
// calls it too. A repository that fails is in the answer, in the
// activity log and alerted; it is an error only when all fail.
func (s *Server) RunBackup(ctx context.Context, app string) ([]BackupRun, error) {
	return s.runBackup(ctx, app, nil)
}

// runBackup is RunBackup, telling progress (when not nil) of each
// repository's run as restic reports it.
func (s *Server) runBackup(ctx context.Context, app string, progress func(repository string, p backup.Progress)) ([]BackupRun, error) {
	repos, st, err := s.repos(ctx)
	if err != nil {
		return nil, err
	}
	var paths []string
	tag := backup.MoatTag
	keep := st.Backup.Policy()
	snap, _ := s.Store.(backup.Snapshotter)
	if app != "" {
		a, ok := st.App(app)
		if !ok {
			return nil, noApp(app)
		}
		if len(a.Data) == 0 {
			return nil, &config.FieldError{Field: "data", Value: "", Problem: "is empty for app " + a.Name, Fix: "list the app's data directories in moat.yaml (data: [/srv/" + a.Name + "/data])"}
		}
		for i, p := range a.Data {
			if _, err := os.Stat(p); err != nil {
				return nil, &config.FieldError{Field: fmt.Sprintf("data[%d]", i), Value: p, Problem: "does not exist on this server", Fix: "correct the path in moat.yaml, or make the directory"}
			}
		}
		paths, tag = a.Data, "app:"+a.Name
		if a.Backup.Keep != (config.Keep{}) {
			keep = a.Backup.Keep
		}
		if err := s.preBackup(ctx, *a); err != nil {
			s.alert(ctx, "backup.failed", a.Name, "The backup of app "+a.Name+" was not made: "+err.Error())
			return nil, err
		}
	} else if snap == nil {
		return nil, errors.New("this store cannot be copied while it serves")
	}
	var out []BackupRun
	failed := 0
	for i, rp := range repos {
		repo := s.repo(rp)
		start := time.Now()
		var sum backup.Summary
		var err error
		var tell func(backup.Progress)
		if progress != nil {
			tell = func(p backup.Progress) { progress(rp.Name, p) }
		}
		if app == "" {
			sum, err = repo.BackupMoat(ctx, snap, s.DataDir, tell)
		} else {
			sum, err = repo.Backup(ctx, paths, []string{tag}, tell)
		}
		var gone backup.Forgotten
		if err == nil {
			gone, err = repo.Forget(ctx, backup.Keep(keep), tag)
		}
		run := BackupRun{Repository: rp.Name, Summary: sum, Duration: time.Since(start).Round(time.Millisecond).String(), Forgotten: gone.Removed}
		detail := fmt.Sprintf("to %s: snapshot %s, %d files, %d bytes added, in %s", rp.Name, sum.SnapshotID, sum.TotalFilesProcessed, sum.DataAdded, run.Duration)
		action := "backup.run"
		if err != nil {
			err = fmt.Errorf("backup.repositories[%d] (%s): %w", i, rp.Name, err)
			run.Error, action, detail = err.Error(), "backup.failed", "to "+rp.Name+": "+err.Error()
			failed++
			s.alert(ctx, "backup.failed", strings.TrimPrefix(tag, "app:"), "The backup of "+orMoat(app)+" "+detail)
		}
		s.record(ctx, action, strings.TrimPrefix(tag, "app:"), detail)
		out = append(out, run)
	}
	if s.OnBackup != nil {
		s.OnBackup(app, out)
	}
	if failed == len(repos) {
		return out, errors.New("the backup failed in every repository: " + out[0].Error)
	}
	return out, nil
}

// preBackup runs an app's pre-backup hook, when it has one: a hook that
// fails stops the backup, since what it dumps would be stale or torn.
func (s *Server) preBackup(ctx context.Context, a config.App) error {
	if a.Backup.Before == "" {
		return nil
	}
	res, err := s.lifecycle().Run(ctx, a, config.PreBackup)
	if err != nil {
		return err
	}
	s.record(ctx, "app."+config.PreBackup, a.Name, runDetail(res))
	if !res.OK() {
		how := fmt.Sprintf("exited with %d", res.ExitCode)
		if res.TimedOut {
			how = "was killed at the timeout (run.timeout)"
		}
		return inputError{&config.FieldError{Field: "backup.before", Value: res.Command, Problem: "the pre-backup hook of app " + a.Name + " " + how + ", so no backup was made: " + lastLine(res.Output),
			Fix: "run the hook by hand and mend it, or remove it from the app"}}
	}
	return nil
}

// lastLine is the last line of a command's output, where it says why it
// failed.
func lastLine(out string) string {
	out = strings.TrimSpace(out)
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return out
}

func orMoat(app string) string {
	if app == "" {
		return "moat itself"
	}
	return "app " + app
}

// alert tells the owner, where alerts go.
func (s *Server) alert(ctx context.Context, kind, subject, msg string) {
	if s.Runtime == nil {
		return
	}
	if err := s.Runtime.Notify(ctx, notify.Alert{At: time.Now().UTC(), Kind: kind, Subject: subject, Message: msg}); err != nil {
		s.Log.Error("alert", "kind", kind, "err", err)
	}
}

func (s *Server) backupSnapshots(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	repos, _, err := s.repos(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	tag := backup.MoatTag
	if a := r.URL.Query().Get("app"); a != "" {
		tag = "app:" + a
	}
	var out []RepositorySnapshots
	for _, rp := range repos {
		list, err := s.repo(rp).Snapshots(ctx, tag)
		rs := RepositorySnapshots{Repository: rp.Name, Snapshots: list}
		if rs.Snapshots == nil {
			rs.Snapshots = []backup.Snapshot{}
		}
		if err != nil {
			rs.Error = err.Error()
		}
		out = append(out, rs)
	}
	writeJSON(w, http.StatusOK, out)
}
