package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AppBackup is when an app is backed up by itself, and how many of its
// snapshots stay.
type AppBackup struct {
	// Schedule is hourly, daily HH:MM (UTC), or every DURATION (like
	// every 6h); empty for none.
	Schedule string `yaml:"schedule,omitempty" json:"schedule,omitempty"`
	// Keep replaces backup.keep for the app.
	Keep Keep `yaml:"keep,omitempty" json:"keep,omitempty"`
	// Before is the pre-backup hook: a shell command run before each
	// backup of the app, like a pg_dump into one of its data
	// directories, so a database is saved consistently. When it fails,
	// no backup is made (and a removal does not go ahead).
	Before string `yaml:"before,omitempty" json:"before,omitempty"`
}

// PreBackup is the action name of the pre-backup hook.
const PreBackup = "pre-backup"

// Command is the shell command of an action, or of the pre-backup hook;
// empty when there is none.
func (a App) Command(action string) string {
	if action == PreBackup {
		return a.Backup.Before
	}
	return a.Run.Command(action)
}

// Schedule is a parsed backup schedule.
type Schedule struct {
	every time.Duration // for hourly and every
	daily bool
	at    time.Duration // since midnight UTC, for daily
}

// ParseSchedule reads hourly, daily HH:MM or every DURATION.
func ParseSchedule(v string) (Schedule, error) {
	f := strings.Fields(v)
	switch {
	case len(f) == 1 && f[0] == "hourly":
		return Schedule{every: time.Hour}, nil
	case len(f) == 2 && f[0] == "daily":
		hh, mm, ok := strings.Cut(f[1], ":")
		h, err1 := strconv.Atoi(hh)
		m, err2 := strconv.Atoi(mm)
		if !ok || err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 {
			break
		}
		return Schedule{daily: true, at: time.Duration(h)*time.Hour + time.Duration(m)*time.Minute}, nil
	case len(f) == 2 && f[0] == "every":
		d, err := time.ParseDuration(f[1])
		if err != nil || d < time.Second || d > 30*24*time.Hour {
			break
		}
		return Schedule{every: d}, nil
	}
	return Schedule{}, fmt.Errorf("%q is not a schedule", v)
}

// Next is the first time the schedule comes due after t.
func (s Schedule) Next(t time.Time) time.Time {
	t = t.UTC()
	if !s.daily {
		return t.Truncate(s.every).Add(s.every)
	}
	day := t.Truncate(24 * time.Hour)
	if next := day.Add(s.at); next.After(t) {
		return next
	}
	return day.Add(24*time.Hour + s.at)
}

// Period is the time between two runs.
func (s Schedule) Period() time.Duration {
	if s.daily {
		return 24 * time.Hour
	}
	return s.every
}

func validateAppBackup(at string, a App, add func(field, value, problem, fix string)) {
	b := a.Backup
	if b.Schedule != "" {
		if _, err := ParseSchedule(b.Schedule); err != nil {
			add(at+".backup.schedule", b.Schedule, "is not a schedule", "write hourly, daily 03:00 (UTC), or every 6h")
		}
		if len(a.Data) == 0 {
			add(at+".backup.schedule", b.Schedule, "has nothing to back up", "list the app's data directories in data")
		}
	}
	if b.Before != "" {
		checkCommand(at+".backup.before", b.Before, add)
		if len(a.Data) == 0 {
			add(at+".backup.before", b.Before, "runs before a backup of nothing", "list the app's data directories in data, with the hook's output in one of them")
		}
	}
	for name, n := range map[string]int{"daily": b.Keep.Daily, "weekly": b.Keep.Weekly, "monthly": b.Keep.Monthly} {
		if n < 0 || n > 1000 {
			add(at+".backup.keep."+name, fmt.Sprint(n), "is not a count from 0 to 1000", "write how many snapshots to keep, like 7")
		}
	}
}
