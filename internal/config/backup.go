package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Backup is where moat keeps its backups and the apps', made by restic.
type Backup struct {
	// Repositories are restic repositories: every backup goes to each.
	Repositories []Repository `yaml:"repositories,omitempty" json:"repositories,omitempty"`
	// Keep is the retention policy applied after each backup:
	// 7 daily, 4 weekly and 6 monthly snapshots by default.
	Keep Keep `yaml:"keep,omitempty" json:"keep,omitempty"`
	// Grace is how long a removed app's backup is kept for moat app
	// restore, like 7d (the default) or 36h.
	Grace string `yaml:"grace,omitempty" json:"grace,omitempty"`
}

// DefaultGrace is how long a removed app can be brought back.
const DefaultGrace = 7 * 24 * time.Hour

// GraceDuration is the validated grace period.
func (b Backup) GraceDuration() time.Duration {
	if d, ok := parseDays(b.Grace); ok {
		return d
	}
	return DefaultGrace
}

// parseDays reads a duration that may be in days (7d) too.
func parseDays(v string) (time.Duration, bool) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		return time.Duration(days) * 24 * time.Hour, err == nil && days > 0
	}
	d, err := time.ParseDuration(v)
	return d, err == nil && d > 0
}

// Repository is one restic repository.
type Repository struct {
	// Name names it in lists, like local or offsite.
	Name string `yaml:"name" json:"name"`
	// URL is a directory (/var/backups/moat), a REST server
	// (rest:https://backup.example.com:8000/moat), S3 (s3:https://host/bucket)
	// or SFTP (sftp:user@host:/srv/restic), as restic writes it.
	URL string `yaml:"url" json:"url"`
	// Credentials is a file (0600, root's) of the repository's secrets
	// as restic reads them from its environment, a NAME=value a line:
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3. They stay out
	// of moat.yaml and the store.
	Credentials string `yaml:"credentials,omitempty" json:"credentials,omitempty"`
}

// CredentialNames are the variables a credentials file may set.
var CredentialNames = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"}

// Keep is how many daily, weekly and monthly snapshots stay.
type Keep struct {
	Daily   int `yaml:"daily,omitempty" json:"daily,omitempty"`
	Weekly  int `yaml:"weekly,omitempty" json:"weekly,omitempty"`
	Monthly int `yaml:"monthly,omitempty" json:"monthly,omitempty"`
}

// DefaultKeep is the retention policy when none is set.
var DefaultKeep = Keep{Daily: 7, Weekly: 4, Monthly: 6}

// Policy is the retention policy in force.
func (b Backup) Policy() Keep {
	if b.Keep == (Keep{}) {
		return DefaultKeep
	}
	return b.Keep
}

var (
	repoName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	restURL  = regexp.MustCompile(`^rest:https?://[^\s/]+(/\S*)?$`)
	s3URL    = regexp.MustCompile(`^s3:(https?://)?[^\s/]+/\S+$`)
	sftpURL  = regexp.MustCompile(`^sftp:(?:([^@\s/]+)@)?([^:\s/]+):(\S+)$`)
	sftpLong = regexp.MustCompile(`^sftp://(?:([^@\s/]+)@)?([^:\s/]+)(?::(\d{1,5}))?/(\S+)$`)
)

// SFTP is where an sftp: repository is: restic writes it
// sftp:user@host:/path, or sftp://user@host:port//path with a port.
type SFTP struct {
	User, Host string
	Port       int // 0 for ssh's own (22)
	Path       string
}

// SFTPTarget reads an sftp: repository address.
func SFTPTarget(u string) (SFTP, bool) {
	if m := sftpLong.FindStringSubmatch(u); m != nil {
		port := 0
		if m[3] != "" {
			port, _ = strconv.Atoi(m[3])
			if port < 1 || port > 65535 {
				return SFTP{}, false
			}
		}
		return SFTP{User: m[1], Host: m[2], Port: port, Path: m[4]}, true
	}
	if strings.HasPrefix(u, "sftp://") {
		return SFTP{}, false
	}
	if m := sftpURL.FindStringSubmatch(u); m != nil {
		return SFTP{User: m[1], Host: m[2], Path: m[3]}, true
	}
	return SFTP{}, false
}

func (s *State) validateBackup(add func(field, value, problem, fix string)) {
	names := map[string]bool{}
	for i, r := range s.Backup.Repositories {
		at := fmt.Sprintf("backup.repositories[%d]", i)
		switch {
		case !repoName.MatchString(r.Name):
			add(at+".name", r.Name, "is not a repository name", "use lowercase letters, digits and hyphens, like local or offsite")
		case names[r.Name]:
			add(at+".name", r.Name, "names two repositories", "give each repository its own name")
		}
		names[r.Name] = true
		if c := r.Credentials; c != "" && (!filepath.IsAbs(c) || filepath.Clean(c) != c) {
			add(at+".credentials", c, "is not a clean absolute path", "name the file from the root, like /etc/moat/s3.env")
		}
		u := r.URL
		switch {
		case strings.HasPrefix(u, "/"):
			if filepath.Clean(u) != u {
				add(at+".url", u, "is not a clean path", "write it as "+filepath.Clean(u))
			}
		case strings.HasPrefix(u, "rest:"):
			if !restURL.MatchString(u) {
				add(at+".url", u, "is not a REST server's address", "write it like rest:https://backup.example.com:8000/moat")
			}
		case strings.HasPrefix(u, "s3:"):
			if !s3URL.MatchString(u) {
				add(at+".url", u, "is not an S3 bucket's address", "write it like s3:https://s3.example.com/bucket/moat")
			}
		case strings.HasPrefix(u, "sftp:"):
			if _, ok := SFTPTarget(u); !ok {
				add(at+".url", u, "is not an SFTP address", "write it like sftp:backup@host.example.com:/srv/restic/moat, or sftp://backup@host.example.com:2222//srv/restic/moat with a port")
			}
		default:
			add(at+".url", u, "is not a repository address moat knows", "write a directory (/var/backups/moat), rest:https://…, s3:https://… or sftp:user@host:/path")
		}
	}
	if g := s.Backup.Grace; g != "" {
		if d, ok := parseDays(g); !ok || d < time.Hour || d > 365*24*time.Hour {
			add("backup.grace", g, "is not a duration from 1h to 365d", "write how long a removed app's backup stays, like 7d")
		}
	}
	k := s.Backup.Keep
	for name, n := range map[string]int{"daily": k.Daily, "weekly": k.Weekly, "monthly": k.Monthly} {
		if n < 0 || n > 1000 {
			add("backup.keep."+name, fmt.Sprint(n), "is not a count from 0 to 1000", "write how many snapshots to keep, like 7")
		}
	}
}
