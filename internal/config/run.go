package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Run is how moat runs an app's lifecycle: a shell command per action,
// or a systemd unit that gives start, stop, restart and status.
type Run struct {
	// Systemd names the app's unit, like gitea.service.
	Systemd string `yaml:"systemd,omitempty" json:"systemd,omitempty"`
	Start   string `yaml:"start,omitempty" json:"start,omitempty"`
	Stop    string `yaml:"stop,omitempty" json:"stop,omitempty"`
	Restart string `yaml:"restart,omitempty" json:"restart,omitempty"`
	Upgrade string `yaml:"upgrade,omitempty" json:"upgrade,omitempty"`
	Remove  string `yaml:"remove,omitempty" json:"remove,omitempty"`
	Status  string `yaml:"status,omitempty" json:"status,omitempty"`
	// Timeout bounds each command, like 5m (DefaultRunTimeout).
	Timeout string `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Actions are an app's lifecycle actions.
var Actions = []string{"start", "stop", "restart", "upgrade", "remove", "status"}

// Terminating reports whether an action stops the app for a while or for
// good: the actions termination protection refuses.
func Terminating(action string) bool {
	return action == "stop" || action == "restart" || action == "upgrade" || action == "remove"
}

// DefaultRunTimeout bounds a lifecycle command that sets no timeout.
const DefaultRunTimeout = 5 * time.Minute

// Command is the shell command of an action: the app's own, or its
// systemd unit's; empty when there is none.
func (r Run) Command(action string) string {
	own := map[string]string{"start": r.Start, "stop": r.Stop, "restart": r.Restart, "upgrade": r.Upgrade, "remove": r.Remove, "status": r.Status}[action]
	if own != "" || r.Systemd == "" {
		return own
	}
	switch action {
	case "start", "stop", "restart":
		return "systemctl " + action + " " + r.Systemd
	case "status":
		return "systemctl --no-pager status " + r.Systemd
	}
	return ""
}

// TimeoutDuration is the validated timeout.
func (r Run) TimeoutDuration() time.Duration {
	if d, err := time.ParseDuration(r.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultRunTimeout
}

// checkCommand refuses a shell command moat cannot run as written.
func checkCommand(field, c string, add func(field, value, problem, fix string)) {
	switch {
	case strings.ContainsRune(c, 0):
		add(field, c, "contains a NUL byte", "write the command as you would type it in a shell")
	case len(c) > 4096:
		add(field, c[:40]+"…", "is longer than 4096 bytes", "put a long script in a file and run the file")
	}
}

var unitName = regexp.MustCompile(`^[A-Za-z0-9@._:\\-]{1,200}\.(service|target|scope)$`)

// validateRun checks an app's lifecycle commands and data paths.
func validateRun(at string, a App, add func(field, value, problem, fix string)) {
	r := a.Run
	if r.Systemd != "" && !unitName.MatchString(r.Systemd) {
		add(at+".run.systemd", r.Systemd, "is not a systemd unit name", "name the unit with its suffix, like gitea.service")
	}
	for _, action := range Actions {
		c := map[string]string{"start": r.Start, "stop": r.Stop, "restart": r.Restart, "upgrade": r.Upgrade, "remove": r.Remove, "status": r.Status}[action]
		checkCommand(at+".run."+action, c, add)
	}
	if t := r.Timeout; t != "" {
		if d, err := time.ParseDuration(t); err != nil || d < time.Second || d > time.Hour {
			add(at+".run.timeout", t, "is not a duration from 1s to 1h", "write how long a command may run, like 5m")
		}
	}
	for j, p := range a.Data {
		field := fmt.Sprintf("%s.data[%d]", at, j)
		switch {
		case !filepath.IsAbs(p):
			add(field, p, "is not an absolute path", "write the app's data directory from the root, like /srv/"+a.Name+"/data")
		case filepath.Clean(p) != p:
			add(field, p, "is not a clean path", "write it as "+filepath.Clean(p))
		case p == "/":
			add(field, p, "is the whole file system", "name the app's own data directories")
		}
	}
}
