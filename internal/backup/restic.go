// Package backup drives restic, which encrypts (AES-256 in counter mode
// with Poly1305) and deduplicates what it stores: moat runs it as a
// subprocess with --json, reads its progress and summary, and turns its
// failures into errors that say what to do.
package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MinVersion is the oldest restic moat drives (Debian 12's).
const MinVersion = "0.14.0"

// The failures moat names.
var (
	ErrNoRestic = errors.New("restic is missing: install it with apt-get install restic (moat drives restic " + MinVersion + " or newer)")
	ErrPassword = errors.New("the repository's password is wrong: restic cannot open its keys with the password in the password file; put the password printed at setup back in that file")
	ErrNoRepo   = errors.New("there is no restic repository at that address yet: moat backup init makes one")
	ErrFull     = errors.New("the backup target's disk is full: free space there, or move the repository")
	ErrSSHKey   = errors.New("ssh could not log in to the SFTP server with moat's SSH key: add the key moat backup init prints to the account's ~/.ssh/authorized_keys there, check that the server answers SSH at that address, and that its host key is the one moat saw there first (moat's known hosts file)")
	ErrHostKey  = errors.New("host key mismatch")
)

// Repo is one restic repository.
type Repo struct {
	// URL is where it is: a directory, rest:http://host:8000/,
	// s3:https://host/bucket, sftp:user@host:/path.
	URL string
	// PasswordFile holds the repository's password (0600).
	PasswordFile string
	// Restic is the restic binary; restic on the PATH when empty.
	Restic string
	// Env is added to restic's environment (an S3 bucket's keys).
	Env []string
	// SSH, for an sftp: repository, is the key and host keys restic's
	// ssh uses; ssh's own settings (root's ~/.ssh) when nil.
	SSH *SSH
}

// Progress is a running backup's state, from restic's status lines.
type Progress struct {
	PercentDone      float64 `json:"percent_done"`
	TotalFiles       int64   `json:"total_files"`
	FilesDone        int64   `json:"files_done"`
	TotalBytes       int64   `json:"total_bytes"`
	BytesDone        int64   `json:"bytes_done"`
	SecondsRemaining int64   `json:"seconds_remaining"`
}

// Summary is what a backup stored.
type Summary struct {
	// SnapshotID names the new snapshot (restic 0.14 gives its short
	// form, which every restic command takes too).
	SnapshotID          string  `json:"snapshot_id"`
	FilesNew            int64   `json:"files_new"`
	FilesChanged        int64   `json:"files_changed"`
	FilesUnmodified     int64   `json:"files_unmodified"`
	DataAdded           int64   `json:"data_added"`
	TotalFilesProcessed int64   `json:"total_files_processed"`
	TotalBytesProcessed int64   `json:"total_bytes_processed"`
	TotalDuration       float64 `json:"total_duration"`
}

// Snapshot is one backup in the repository.
type Snapshot struct {
	ID    string    `json:"id"`
	Short string    `json:"short_id"`
	Time  time.Time `json:"time"`
	Paths []string  `json:"paths"`
	Tags  []string  `json:"tags"`
	Host  string    `json:"hostname"`
}

// Keep is a retention policy: how many daily, weekly and monthly
// snapshots stay.
type Keep struct {
	Daily   int `yaml:"daily,omitempty" json:"daily,omitempty"`
	Weekly  int `yaml:"weekly,omitempty" json:"weekly,omitempty"`
	Monthly int `yaml:"monthly,omitempty" json:"monthly,omitempty"`
}

var versionRE = regexp.MustCompile(`restic (\d+)\.(\d+)\.(\d+)`)

// CheckRestic reports restic's version, or why moat cannot drive it.
func CheckRestic(ctx context.Context, bin string) (string, error) {
	if bin == "" {
		bin = "restic"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", ErrNoRestic
	}
	out, err := exec.CommandContext(ctx, path, "version").Output()
	if err != nil {
		return "", fmt.Errorf("restic version: %w", err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("restic version said %q: moat cannot tell which restic this is", strings.TrimSpace(string(out)))
	}
	v := m[1] + "." + m[2] + "." + m[3]
	if older(v, MinVersion) {
		return v, fmt.Errorf("restic %s is older than %s, which moat needs: upgrade it (apt-get install restic)", v, MinVersion)
	}
	return v, nil
}

func older(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range 3 {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return false
}

// NewPassword writes a new random repository password to path (0600)
// and returns it, to be shown once; it refuses to replace one.
func NewPassword(path string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("backup: random: %w", err)
	}
	pw := base64.RawURLEncoding.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("backup: password file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("backup: %s exists: a repository password is never replaced, since the backups it encrypts could not be read without it", path)
		}
		return "", fmt.Errorf("backup: password file: %w", err)
	}
	if _, err := f.WriteString(pw + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("backup: password file: %w", err)
	}
	return pw, f.Close()
}

// command is restic with the repository's settings.
func (r Repo) command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	bin := r.Restic
	if bin == "" {
		bin = "restic"
	}
	opts := []string{"--repo", r.URL, "--password-file", r.PasswordFile, "--no-cache"}
	if r.SSH != nil {
		line, err := r.SSH.command()
		if err != nil {
			return nil, err
		}
		opts = append(opts, "-o", "sftp.command="+line)
	}
	cmd := exec.CommandContext(ctx, bin, append(opts, args...)...)
	// restic's own environment only: no RESTIC_* of moat's leaks in.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	cmd.Env = append(env, r.Env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// run runs restic and returns its standard output; a failure is read
// from its standard error.
func (r Repo) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd, err := r.command(ctx, args...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, r.failure(args[0], err, stderr.String())
	}
	return out, nil
}

// failure names what went wrong in restic's words, and the fix.
func (r Repo) failure(what string, err error, stderr string) error {
	if errors.Is(err, exec.ErrNotFound) {
		return ErrNoRestic
	}
	msg := strings.TrimSpace(stderr)
	switch {
	case strings.Contains(msg, "wrong password"):
		return fmt.Errorf("restic %s at %s: %w", what, r.URL, ErrPassword)
	case strings.Contains(msg, "Is there a repository at the following location?"), strings.Contains(msg, "repository does not exist"):
		return fmt.Errorf("restic %s at %s: %w", what, r.URL, ErrNoRepo)
	case strings.Contains(msg, "no space left on device"):
		return fmt.Errorf("restic %s at %s: %w", what, r.URL, ErrFull)
	case strings.Contains(msg, "Host key verification failed"), strings.Contains(msg, "REMOTE HOST IDENTIFICATION HAS CHANGED"):
		known := "moat's known hosts file"
		if r.SSH != nil {
			known = r.SSH.KnownHosts
		}
		return fmt.Errorf("restic %s at %s: the SFTP server's host key is not the one moat saw there first: if the server was reinstalled, remove its line from %s; if not, someone may be in the middle: %w", what, r.URL, known, ErrHostKey)
	case strings.Contains(msg, "Permission denied (publickey"), strings.Contains(msg, "unable to start the sftp session"):
		return fmt.Errorf("restic %s at %s: %w", what, r.URL, ErrSSHKey)
	}
	if len(msg) > 2000 {
		msg = "…" + msg[len(msg)-2000:]
	}
	return fmt.Errorf("restic %s at %s: %w: %s", what, r.URL, err, msg)
}

// Init makes the repository; one that exists already is left as it is.
func (r Repo) Init(ctx context.Context) error {
	_, err := r.run(ctx, "init")
	if err != nil && strings.Contains(err.Error(), "already") {
		return nil
	}
	return err
}

// Backup stores paths as a snapshot with tags, telling progress (when
// not nil) of restic's status as it goes.
func (r Repo) Backup(ctx context.Context, paths, tags []string, progress func(Progress)) (Summary, error) {
	args := []string{"backup", "--json"}
	for _, t := range tags {
		args = append(args, "--tag", t)
	}
	cmd, err := r.command(ctx, append(append(args, "--"), paths...)...)
	if err != nil {
		return Summary{}, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Summary{}, fmt.Errorf("restic backup: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return Summary{}, r.failure("backup", err, "")
	}
	var (
		sum      Summary
		got      bool
		problems []string
	)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Type  string `json:"message_type"`
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
			Item string `json:"item"`
		}
		line := sc.Bytes()
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		switch m.Type {
		case "status":
			var p Progress
			if json.Unmarshal(line, &p) == nil && progress != nil {
				progress(p)
			}
		case "summary":
			got = json.Unmarshal(line, &sum) == nil
		case "error":
			problems = append(problems, m.Item+": "+m.Error.Message)
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil && got:
		return sum, nil
	case errors.As(err, &ee) && ee.ExitCode() == 3 && got:
		// The snapshot was made, without some files.
		return sum, fmt.Errorf("restic backup at %s: snapshot %s lacks files it could not read: %s", r.URL, sum.SnapshotID, strings.Join(problems, "; "))
	case err == nil:
		return sum, fmt.Errorf("restic backup at %s: no summary came", r.URL)
	}
	return sum, r.failure("backup", err, stderr.String())
}

// Snapshots lists the snapshots with all of tags, oldest first.
func (r Repo) Snapshots(ctx context.Context, tags ...string) ([]Snapshot, error) {
	args := []string{"snapshots", "--json"}
	if len(tags) > 0 {
		args = append(args, "--tag", strings.Join(tags, ","))
	}
	out, err := r.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	var list []Snapshot
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("restic snapshots: %w", err)
	}
	return list, nil
}

// Restore writes a snapshot's files under target, at their full paths.
func (r Repo) Restore(ctx context.Context, snapshot, target string) error {
	_, err := r.run(ctx, "restore", snapshot, "--target", target)
	return err
}

// Forgotten is what a retention run did: the snapshots it kept and the
// ones it removed (short IDs).
type Forgotten struct {
	Kept    []string `json:"kept"`
	Removed []string `json:"removed"`
}

// Forget removes snapshots with all of tags beyond what keep keeps, and
// prunes the data no snapshot needs any more.
func (r Repo) Forget(ctx context.Context, keep Keep, tags ...string) (Forgotten, error) {
	var out Forgotten
	args := []string{"forget", "--json", "--prune", "--group-by", "host,tags"}
	if len(tags) > 0 {
		args = append(args, "--tag", strings.Join(tags, ","))
	}
	for flag, n := range map[string]int{"--keep-daily": keep.Daily, "--keep-weekly": keep.Weekly, "--keep-monthly": keep.Monthly} {
		if n > 0 {
			args = append(args, flag, strconv.Itoa(n))
		}
	}
	if keep == (Keep{}) {
		return out, errors.New("backup: a retention policy that keeps nothing would forget every snapshot: keep at least one daily")
	}
	stdout, err := r.run(ctx, args...)
	if err != nil {
		return out, err
	}
	// The groups come first, as JSON; prune's report follows as text.
	var groups []struct {
		Keep   []Snapshot `json:"keep"`
		Remove []Snapshot `json:"remove"`
	}
	if err := json.NewDecoder(bytes.NewReader(stdout)).Decode(&groups); err != nil {
		return out, fmt.Errorf("restic forget: its answer: %w", err)
	}
	for _, g := range groups {
		for _, s := range g.Keep {
			out.Kept = append(out.Kept, s.Short)
		}
		for _, s := range g.Remove {
			out.Removed = append(out.Removed, s.Short)
		}
	}
	return out, nil
}

// Drop removes snapshots by ID and prunes their data.
func (r Repo) Drop(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := r.run(ctx, append([]string{"forget", "--prune"}, ids...)...)
	return err
}

// Verify checks the repository's structure and reads back a share of
// its data (like 5%), to catch what rots on the disk.
func (r Repo) Verify(ctx context.Context, subset string) error {
	_, err := r.run(ctx, "check", "--read-data-subset", subset)
	return err
}
