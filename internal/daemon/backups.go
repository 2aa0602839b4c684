package daemon

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/api"
	"moat/internal/config"
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
	failures *prometheus.CounterVec
}

func newBackupMetrics(reg prometheus.Registerer) *backupMetrics {
	m := &backupMetrics{
		last:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_last_success_timestamp_seconds", Help: "When the app's last backup succeeded, in one repository at least."}, []string{"app"}),
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_duration_seconds", Help: "How long the app's last backup took, in its slowest repository."}, []string{"app"}),
		added:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_backup_added_bytes", Help: "What the app's last backup added to its repositories."}, []string{"app"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_backup_failures_total", Help: "Backups that failed, per app and repository."}, []string{"app", "repository"}),
	}
	reg.MustRegister(m.last, m.duration, m.added, m.failures)
	return m
}

// observe counts one backup run.
func (m *backupMetrics) observe(app string, runs []api.BackupRun) {
	if app == "" {
		app = "moat"
	}
	ok, slowest, added := false, 0.0, int64(0)
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
	}
	if ok {
		m.last.WithLabelValues(app).SetToCurrentTime()
		m.duration.WithLabelValues(app).Set(slowest)
		m.added.WithLabelValues(app).Set(float64(added))
	}
}

// scheduleBackups runs each app's scheduled backups until ctx ends. A
// run that fails is alerted by the API (RunBackup); a run missed while
// moat was down is not made up for.
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
		for _, a := range st.Apps {
			sched, err := config.ParseSchedule(a.Backup.Schedule)
			if err != nil {
				delete(next, a.Name)
				continue
			}
			key := a.Name + "\x00" + a.Backup.Schedule
			due, seen := next[key]
			if !seen {
				next[key] = sched.Next(now)
				continue
			}
			if now.Before(due) {
				continue
			}
			next[key] = sched.Next(now)
			if _, err := srv.RunBackup(ctx, a.Name); err != nil && ctx.Err() == nil {
				d.log.Error("scheduled backup", "app", a.Name, "err", err)
			}
		}
		for key := range next {
			name, _, _ := strings.Cut(key, "\x00")
			if _, ok := st.App(name); !ok {
				delete(next, key)
			}
		}
	}
}
