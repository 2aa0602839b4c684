package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"moat/internal/config"
	"moat/internal/store"
)

// RemoveResponse is what removing an app did: the change, and the grace
// backup it can be brought back from.
type RemoveResponse struct {
	ChangeResponse
	Grace *store.Removed `json:"grace,omitempty"`
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// removeWithGrace removes an app the careful way: the checks first
// (drop, on a dry run), then a backup of its data kept for the grace
// period, its stop and remove commands, and its routes and rules. A
// failed backup removes nothing.
func (s *Server) removeWithGrace(ctx context.Context, name string, noGrace bool, drop func(*config.State) error) (RemoveResponse, error) {
	if _, err := s.change(ctx, true, drop); err != nil {
		return RemoveResponse{}, err
	}
	st, _, err := s.Store.State(ctx)
	if err != nil {
		return RemoveResponse{}, err
	}
	a, _ := st.App(name)
	app := a.Clone()
	now := s.now().UTC()
	rec := store.Removed{App: app, At: now, Expires: now.Add(st.Backup.GraceDuration())}
	if !noGrace && len(app.Data) > 0 {
		refuse := func(err error) error {
			return fmt.Errorf("app %s was not removed: its grace backup cannot be made: %w (to remove it with no backup, give --no-grace-backup and type its name twice)", name, err)
		}
		repos, _, err := s.repos(ctx)
		if err != nil {
			return RemoveResponse{}, inputError{refuse(err)}
		}
		for _, p := range app.Data {
			if _, err := os.Stat(p); err != nil {
				return RemoveResponse{}, inputError{refuse(fmt.Errorf("data path %s: %w", p, err))}
			}
		}
		if err := s.preBackup(ctx, app); err != nil {
			return RemoveResponse{}, inputError{refuse(err)}
		}
		sum, err := s.repo(repos[0]).Backup(ctx, app.Data, []string{"app:" + name, "grace"}, nil)
		if err != nil {
			return RemoveResponse{}, refuse(err)
		}
		rec.Repository, rec.Snapshot = repos[0].Name, sum.SnapshotID
		s.record(ctx, "backup.grace", name, fmt.Sprintf("snapshot %s in %s, kept until %s", sum.SnapshotID, repos[0].Name, rec.Expires.Format(time.RFC3339)))
	}
	for _, action := range []string{"stop", "remove"} {
		if app.Run.Command(action) == "" {
			continue
		}
		res, err := s.lifecycle().Run(ctx, app, action)
		if err != nil {
			return RemoveResponse{}, err
		}
		s.record(ctx, "app."+action, name, runDetail(res))
	}
	out, err := s.change(ctx, false, drop)
	if err != nil {
		return RemoveResponse{}, err
	}
	resp := RemoveResponse{ChangeResponse: out}
	if !noGrace {
		if err := s.Store.AddRemoved(ctx, rec); err != nil {
			return resp, err
		}
		resp.Grace = &rec
	}
	return resp, nil
}

// purgeRemoved forgets the removed apps whose grace has ended, and drops
// their backups from the repository.
func (s *Server) purgeRemoved(ctx context.Context) error {
	list, err := s.Store.Removed(ctx)
	if err != nil {
		return err
	}
	st, _, err := s.Store.State(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	var errs []error
	for _, r := range list {
		if now.Before(r.Expires) {
			continue
		}
		if r.Snapshot != "" {
			if err := s.repoNamed(st, r.Repository).Drop(ctx, r.Snapshot); err != nil {
				errs = append(errs, fmt.Errorf("app %s's grace backup %s: %w", r.App.Name, r.Snapshot, err))
				continue
			}
		}
		if _, err := s.Store.TakeRemoved(ctx, r.App.Name); err != nil && !errors.Is(err, store.ErrNoRemoved) {
			errs = append(errs, err)
			continue
		}
		s.record(ctx, "app.purged", r.App.Name, "the grace period ended on "+r.Expires.Format(time.RFC3339)+": the app's backup is gone")
	}
	return errors.Join(errs...)
}

// PurgeRemoved is purgeRemoved, for the daemon's hourly sweep.
func (s *Server) PurgeRemoved(ctx context.Context) error { return s.purgeRemoved(ctx) }

func (s *Server) repoNamed(st config.State, name string) interface {
	Drop(ctx context.Context, ids ...string) error
	Restore(ctx context.Context, snapshot, target string) error
} {
	for _, rp := range st.Backup.Repositories {
		if rp.Name == name {
			return s.repo(rp)
		}
	}
	return missingRepo(name)
}

// missingRepo answers for a repository no longer in moat.yaml.
type missingRepo string

func (m missingRepo) err() error {
	return fmt.Errorf("repository %s is no longer in moat.yaml: put it back in backup.repositories", string(m))
}
func (m missingRepo) Drop(context.Context, ...string) error         { return m.err() }
func (m missingRepo) Restore(context.Context, string, string) error { return m.err() }

func (s *Server) listRemoved(w http.ResponseWriter, r *http.Request) {
	if err := s.purgeRemoved(r.Context()); err != nil {
		s.Log.Error("purge removed apps", "err", err)
	}
	list, err := s.Store.Removed(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	if list == nil {
		list = []store.Removed{}
	}
	writeJSON(w, http.StatusOK, list)
}

// restoreApp brings a removed app back within its grace: its data (in
// place), its settings and routes, and starts it.
func (s *Server) restoreApp(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	if err := s.purgeRemoved(ctx); err != nil {
		s.Log.Error("purge removed apps", "err", err)
	}
	list, err := s.Store.Removed(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	var rec *store.Removed
	for i := range list {
		if list[i].App.Name == name {
			rec = &list[i]
		}
	}
	if rec == nil {
		s.fail(w, notFound(fmt.Sprintf("no removed app %s can be brought back: it was not removed, was removed without a grace backup, or its grace ended (moat app removed lists them)", name)))
		return
	}
	a := rec.App
	add := func(st *config.State) error {
		if _, exists := st.App(a.Name); exists {
			return conflict{fmt.Errorf("an app named %s exists again: remove or rename it before bringing the old one back", a.Name)}
		}
		if err := domainsFree(st, a.Name, a.Domains); err != nil {
			return err
		}
		st.Apps = append(st.Apps, a.Clone())
		return nil
	}
	if _, err := s.change(ctx, true, add); err != nil {
		s.fail(w, err)
		return
	}
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	if rec.Snapshot != "" {
		if err := s.repoNamed(st, rec.Repository).Restore(ctx, rec.Snapshot, "/"); err != nil {
			s.fail(w, fmt.Errorf("app %s's data could not be restored, so it stays removed: %w", name, err))
			return
		}
	}
	out, err := s.change(ctx, false, add)
	if err != nil {
		s.fail(w, err)
		return
	}
	if _, err := s.Store.TakeRemoved(ctx, name); err != nil {
		s.Log.Error("restore: forget the removal", "app", name, "err", err)
	}
	if rec.Snapshot != "" {
		if err := s.repoNamed(st, rec.Repository).Drop(ctx, rec.Snapshot); err != nil {
			s.Log.Error("restore: drop the grace backup", "app", name, "err", err)
		}
	}
	s.record(ctx, "app.restore", name, fmt.Sprintf("brought back from snapshot %s in %s", orNone(rec.Snapshot), orNone(rec.Repository)))
	if a.Run.Command("start") != "" {
		if res, err := s.lifecycle().Run(ctx, a, "start"); err == nil {
			s.record(ctx, "app.start", name, runDetail(res))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
