package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/notify"
	"moat/internal/store"
)

// DefaultBackupCheck is how often the schedule of the apps' backups is
// looked at.
const DefaultBackupCheck = 15 * time.Second

// backupMetrics are the backups' Prometheus metrics, per app (moat for
// moat's own).
type backupMetrics struct {
	last     *prometheus.GaugeVec
	duration *prometheus.GaugeVec
	added    *prometheus.GaugeVec
	size     *prometheus.GaugeVec
	failures *prometheus.CounterVec
}

func newBackupMetrics(reg prometheus.Registerer) *backupMetrics {
	m := &backupMetrics{
		last:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_last_success_timestamp_seconds", Help: "When the app's last backup succeeded, in one repository at least."}, []string{"app"}),
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_duration_seconds", Help: "How long the app's last backup took, in its slowest repository."}, []string{"app"}),
		added:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_added_bytes", Help: "What the app's last backup added to its repositories."}, []string{"app"}),
		size:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_size_bytes", Help: "How much the app's last backup holds: the size of its data."}, []string{"app"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_backup_failures_total", Help: "Backups that failed, per app and repository."}, []string{"app", "repository"}),
	}
	reg.MustRegister(m.last, m.duration, m.added, m.size, m.failures)
	return m
}

// observe counts one backup run.
func (m *backupMetrics) observe(app string, runs []api.BackupRun) {
	if app == "" {
		app = "moat"
	}
	ok, slowest, added, size := false, 0.0, int64(0), int64(0)
	for _, r := range runs {
		if r.Error != "" {
			m.failures.WithLabelValues(app, r.Repository).Inc()
			continue
		}
		ok = true
		if d, err := time.ParseDuration(r.Duration); err == nil {
			slowest = max(slowest, d.Seconds())
		}
		added += r.Summary.DataAdded
		size = max(size, r.Summary.TotalBytesProcessed)
	}
	if ok {
		m.last.WithLabelValues(app).SetToCurrentTime()
		m.duration.WithLabelValues(app).Set(slowest)
		m.added.WithLabelValues(app).Set(float64(added))
		m.size.WithLabelValues(app).Set(float64(size))
	}
}

// scheduleBackups runs each app's scheduled backups until ctx ends. A
// run that fails is alerted by the API (RunBackup); a run missed while
// moat was down (or while the app had no schedule) is alerted and made
// up for at once.
func (d *Daemon) scheduleBackups(ctx context.Context, srv *api.Server) {
	every := d.opts.BackupCheck
	if every <= 0 {
		every = DefaultBackupCheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	next := map[string]time.Time{} // app, with its schedule, to the next run
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, _, err := d.store.State(ctx)
		if err != nil {
			continue
		}
		now := time.Now()
		live := map[string]bool{}
		for _, a := range st.Apps {
			sched, err := config.ParseSchedule(a.Backup.Schedule)
			if err != nil {
				continue
			}
			key := a.Name + "\x00" + a.Backup.Schedule
			live[key] = true
			due, seen := next[key]
			if !seen {
				next[key] = sched.Next(now)
				if !d.missedBackup(ctx, a, sched, now) {
					continue
				}
			} else if now.Before(due) {
				continue
			}
			next[key] = sched.Next(now)
			if _, err := srv.RunBackup(ctx, a.Name); err != nil && ctx.Err() == nil {
				d.log.Error("scheduled backup", "app", a.Name, "err", err)
			}
		}
		for key := range next {
			if !live[key] {
				delete(next, key) // the app, or its schedule, is gone
			}
		}
	}
}

// missedBackup reports whether an app's scheduled backup did not run: a
// run was due after its last successful backup, and went by. It alerts
// the owner, saying when; the caller makes the backup up.
func (d *Daemon) missedBackup(ctx context.Context, a config.App, sched config.Schedule, now time.Time) bool {
	last, err := d.store.Activity(ctx, store.Query{Target: a.Name, Action: "backup.run", Limit: 1})
	if err != nil || len(last) == 0 {
		return false // never backed up: nothing was missed yet
	}
	due := sched.Next(last[0].At)
	if !due.Before(now.Add(-time.Minute)) {
		return false
	}
	msg := fmt.Sprintf("The scheduled backup of app %s (%s) was due at %s and did not run: moat was not running then, or the app had no schedule. The last backup was at %s; moat backs it up now.",
		a.Name, a.Backup.Schedule, due.UTC().Format(time.RFC3339), last[0].At.UTC().Format(time.RFC3339))
	if err := d.store.Record(ctx, store.Entry{At: now, Who: "moat", From: "the backup schedule", Action: "backup.missed", Target: a.Name, Detail: msg}); err != nil {
		d.log.Error("activity log", "err", err)
	}
	if err := d.Notify(ctx, notify.Alert{At: now.UTC(), Kind: "backup.missed", Subject: a.Name, Message: msg}); err != nil {
		d.log.Warn("alert not delivered", "err", err)
	}
	return true
}
