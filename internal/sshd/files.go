package sshd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// This file puts keys where sshd reads them: one file per user in moat's
// own directory, and a drop-in that adds the directory to
// AuthorizedKeysFile. A user's own ~/.ssh/authorized_keys is never
// written.

// Paths are where moat finds and puts sshd's files; tests point them at a
// directory of their own.
type Paths struct {
	// SSHD is the sshd binary, for sshd -t and sshd -T.
	SSHD string
	// Config is sshd's main configuration file.
	Config string
	// DropInDir is the directory the main configuration includes
	// (Include /etc/ssh/sshd_config.d/*.conf on Debian and Ubuntu).
	DropInDir string
	// KeysDir holds moat's key files, one per user, named after the
	// user. It and its parents must be owned by root and writable by
	// nobody else, or sshd's StrictModes ignores the files.
	KeysDir string
	// Passwd, Shadow and Group are the account files, for who can log
	// in, who has a password and who is in which group; /etc/passwd,
	// /etc/shadow and /etc/group when empty.
	Passwd, Shadow, Group string
}

// DefaultPaths are those of Debian's and Ubuntu's OpenSSH, and moat's own.
func DefaultPaths() Paths {
	return Paths{SSHD: "/usr/sbin/sshd", Config: "/etc/ssh/sshd_config", DropInDir: "/etc/ssh/sshd_config.d", KeysDir: "/etc/moat/ssh/authorized_keys"}
}

// keysDropIn is moat's drop-in for keys. sshd takes the first value it
// reads for AuthorizedKeysFile, and reads drop-ins in name order: "00-"
// comes before the usual 50-cloud-init.conf.
const keysDropIn = "00-moat-keys.conf"

// keysHeader starts every key file of moat's.
const keysHeader = "# Written by moat: change it with moat ssh keys, not here.\n"

// ErrNotTaken marks a change sshd would not take as moat means it (a
// setting made before moat's drop-in is read).
var ErrNotTaken = errors.New("not taken by sshd")

// UserKeys are the keys of one user, with their titles.
type UserKeys struct {
	User string
	Keys []TitledKey
}

// TitledKey is a key and what its owner calls it.
type TitledKey struct {
	Title string
	Line  string
}

// Manager writes moat's keys and drop-ins and has sshd take them.
type Manager struct {
	Paths Paths
	// Reload has the running sshd read its configuration again;
	// systemctl reload ssh (or sshd) by default.
	Reload func(ctx context.Context) error
	// SocketActivated reports whether systemd's ssh.socket holds sshd's
	// ports (a port cannot move then); systemctl is-active by default.
	SocketActivated func(ctx context.Context) bool

	harden hardening
}

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}$`)

// ValidUser says what is wrong with a user name, or "".
func ValidUser(u string) string {
	if !userName.MatchString(u) {
		return "is not a user name: lower-case letters, digits, dots, underscores and hyphens, up to 32, not starting with a digit"
	}
	return ""
}

// SyncKeys makes moat's key files hold exactly keys: a file for each user
// with keys, written whole (a new file renamed over the old one), and
// none for the others. The first time, it adds the drop-in, checks the
// configuration with sshd -t and has sshd reload it. A configuration
// sshd refuses is taken back, and the error says why.
func (m *Manager) SyncKeys(ctx context.Context, keys []UserKeys) error {
	if len(keys) > 0 {
		if err := m.ensureDropIn(ctx); err != nil {
			return err
		}
	}
	if err := m.keysDir(); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, uk := range keys {
		if why := ValidUser(uk.User); why != "" {
			return fmt.Errorf("ssh keys: user %q %s", uk.User, why)
		}
		want[uk.User] = true
		var b bytes.Buffer
		b.WriteString(keysHeader)
		for _, k := range uk.Keys {
			fmt.Fprintf(&b, "# %s\n%s\n", strings.ReplaceAll(k.Title, "\n", " "), k.Line)
		}
		if err := writeFile(filepath.Join(m.Paths.KeysDir, uk.User), b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("ssh keys of %s: %w", uk.User, err)
		}
	}
	entries, err := os.ReadDir(m.Paths.KeysDir)
	if err != nil {
		return fmt.Errorf("ssh keys: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(m.Paths.KeysDir, e.Name())
		if e.IsDir() || want[e.Name()] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		// Only moat's own files go: one put here by hand stays.
		if b, err := os.ReadFile(p); err != nil || !bytes.HasPrefix(b, []byte(keysHeader)) {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("ssh keys: %w", err)
		}
	}
	return nil
}

// keysDir makes the keys directory as sshd's StrictModes wants it: owned
// by root, writable by nobody else, and so every directory above it; one
// that is not is refused with the fix, since sshd would ignore the keys.
func (m *Manager) keysDir() error {
	// Made one level at a time, each 0755 whatever the umask: sshd
	// reads a user's keys as the user.
	var made []string
	for p := filepath.Clean(m.Paths.KeysDir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		made = append(made, p)
		if p == "/" {
			break
		}
	}
	for i := len(made) - 1; i >= 0; i-- {
		if err := os.Mkdir(made[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("ssh keys: %w", err)
		}
		if err := os.Chmod(made[i], 0o755); err != nil {
			return fmt.Errorf("ssh keys: %w", err)
		}
	}
	if err := os.Chown(m.Paths.KeysDir, 0, 0); err != nil {
		return fmt.Errorf("ssh keys: %w", err)
	}
	if err := os.Chmod(m.Paths.KeysDir, 0o755); err != nil {
		return fmt.Errorf("ssh keys: %w", err)
	}
	for p := filepath.Dir(m.Paths.KeysDir); ; p = filepath.Dir(p) {
		if !safe(p, 0) {
			return fmt.Errorf("ssh keys: %s is not owned by root, or others may write to it, so sshd (StrictModes) would ignore moat's keys below it: chown root:root %s && chmod go-w %s", p, p, p)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("ssh keys: others may not enter %s, so sshd, which reads a user's keys as the user, would not find them: chmod o+x %s", p, p)
		}
		if p == "/" {
			return nil
		}
	}
}

// ensureDropIn writes the drop-in that adds moat's key files to
// AuthorizedKeysFile, keeping the files sshd reads now (the users' own,
// or what the owner set), unless it is there already.
func (m *Manager) ensureDropIn(ctx context.Context) error {
	path := filepath.Join(m.Paths.DropInDir, keysDropIn)
	mine := filepath.Join(m.Paths.KeysDir, "%u")
	if old, err := os.ReadFile(path); err == nil && strings.Contains(string(old), " "+mine+"\n") {
		return nil
	}
	eff, err := m.Effective(ctx, "root")
	if err != nil {
		return err
	}
	var files []string
	for _, f := range eff.Values("authorizedkeysfile") {
		if f != mine && f != "none" {
			files = append(files, f)
		}
	}
	content := []byte("# Written by moat: the keys of moat ssh keys, beside the files sshd read before.\n" +
		"AuthorizedKeysFile " + strings.Join(append(files, mine), " ") + "\n")
	return m.changeDropIn(ctx, keysDropIn, content, func(eff Effective) error {
		got := eff.Values("authorizedkeysfile")
		for _, f := range append(files, mine) {
			if !slices.Contains(got, f) {
				return fmt.Errorf("sshd does not read moat's keys as moat set them: its effective AuthorizedKeysFile is %q, set before moat's drop-in %s is read; remove that AuthorizedKeysFile line (from %s or an earlier drop-in), or add %s to it: %w",
					strings.Join(got, " "), path, m.Paths.Config, mine, ErrNotTaken)
			}
		}
		return nil
	})
}

// changeDropIn puts content in the drop-in called name, has sshd check
// the whole configuration (sshd -t) and check (on sshd -T's effective
// settings), then reloads sshd. If sshd refuses it, or check does, or
// the reload fails, the drop-in goes back to what it was.
func (m *Manager) changeDropIn(ctx context.Context, name string, content []byte, check func(Effective) error) error {
	// Once begun, the host's side is seen through: a client that leaves
	// must not stop it between writing a file and taking it back. A
	// command that hangs is stopped, and the drop-in taken back.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := os.MkdirAll(m.Paths.DropInDir, 0o755); err != nil {
		return fmt.Errorf("sshd: %w", err)
	}
	path := filepath.Join(m.Paths.DropInDir, name)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sshd: %w", err)
	}
	had := err == nil
	restore := func() error {
		if had {
			return writeFile(path, old, 0o644)
		}
		return os.Remove(path)
	}
	if err := writeFile(path, content, 0o644); err != nil {
		return fmt.Errorf("sshd: %w", err)
	}
	if err := m.Test(ctx); err == nil && check != nil {
		var eff Effective
		if eff, err = m.Effective(ctx, "root"); err == nil {
			err = check(eff)
		}
		if err != nil {
			return errors.Join(err, restore())
		}
	} else if err != nil {
		return errors.Join(fmt.Errorf("sshd refuses the configuration with moat's %s, which is not loaded: %w", name, err), restore())
	}
	if err := m.reload(ctx); err != nil {
		// Left on disk, the drop-in would take at the next reload or
		// boot, with no window to take it back in.
		return errors.Join(fmt.Errorf("sshd: the configuration is checked, but sshd did not reload it, so moat's %s is taken back: %w", name, err), restore())
	}
	return nil
}

// Test runs sshd -t on the configuration.
func (m *Manager) Test(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, m.Paths.SSHD, "-t", "-f", m.Paths.Config).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sshd -t: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Effective is sshd's effective configuration (sshd -T): lower-case
// keyword to its values, in order.
type Effective map[string][]string

// Value is the first value of keyword; Values all of them, split at
// spaces (AuthorizedKeysFile lists files).
func (e Effective) Value(keyword string) string {
	if v := e[keyword]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (e Effective) Values(keyword string) []string {
	var out []string
	for _, v := range e[keyword] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// Effective reads sshd's effective configuration for a connection of
// user (sshd -T with -C, so that Match blocks apply).
func (m *Manager) Effective(ctx context.Context, user string) (Effective, error) {
	out, err := exec.CommandContext(ctx, m.Paths.SSHD, "-T", "-f", m.Paths.Config, "-C", "user="+user+",host=localhost,addr=127.0.0.1").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("sshd -T: %w", err)
	}
	eff := Effective{}
	for line := range strings.Lines(string(out)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		if k != "" {
			eff[strings.ToLower(k)] = append(eff[strings.ToLower(k)], v)
		}
	}
	return eff, nil
}

func (m *Manager) reload(ctx context.Context) error {
	if m.Reload != nil {
		return m.Reload(ctx)
	}
	var errs []error
	for _, unit := range []string{"ssh", "sshd"} {
		out, err := exec.CommandContext(ctx, "systemctl", "reload", unit).CombinedOutput()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("systemctl reload %s: %w: %s", unit, err, strings.TrimSpace(string(out))))
	}
	return errors.Join(errs...)
}

// writeFile writes data to path whole: a file beside it, synced, then
// renamed over it, so that sshd never reads half a file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // gone by the rename, unless something failed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
