package sshd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// This file answers the question every change that can cut access asks
// first: with password login off, who still gets in?

// Access is who can log in once passwords are off: the users with a key
// sshd would take, and those who log in with a password today and have
// none.
type Access struct {
	WithKeys   []string `json:"with_keys"`
	LockedOut  []string `json:"locked_out,omitempty"`
	Considered []string `json:"considered"`
}

// ErrLockout marks a change refused because nobody would keep a way in.
var ErrLockout = errors.New("would lock everyone out")

// CheckAccess finds who keeps a way in with password login off: a user
// who can log in (root, or an account with a login shell and a UID of
// 1000 or more) whom sshd lets in (AllowUsers, DenyUsers, a locked
// account) with a key it would take: in a file of AuthorizedKeysFile as
// sshd reads it for him, that StrictModes allows, and with no option that
// stops a plain login (command=, from=, expiry-time=, cert-authority).
// proposed, when not nil, stands for moat's key files (a change to them
// being checked). With nobody, it refuses (ErrLockout), naming who would
// be locked out.
func (m *Manager) CheckAccess(ctx context.Context, proposed []UserKeys) (Access, error) {
	var a Access
	users, err := loginUsers(m.passwd())
	if err != nil {
		return a, err
	}
	hashes := shadowHashes(m.shadow())
	groups := memberships(m.group())
	moatDir := filepath.Clean(m.Paths.KeysDir)
	for _, u := range users {
		a.Considered = append(a.Considered, u.name)
		hash, known := hashes[u.name]
		hasPassword := known && hash != "" && !strings.HasPrefix(hash, "!") && !strings.HasPrefix(hash, "*")
		eff, err := m.Effective(ctx, u.name)
		if err != nil {
			return a, err
		}
		ok := allowed(eff, u, groups) && keysAllowed(eff) && !(eff.Value("usepam") == "no" && strings.HasPrefix(hash, "!")) &&
			(u.name != "root" || rootByKey(eff.Value("permitrootlogin"))) && (eff.Value("forcecommand") == "" || eff.Value("forcecommand") == "none")
		if ok {
			ok = false
			for _, f := range keyFiles(eff, u) {
				var lines []string
				if proposed != nil && filepath.Dir(f) == moatDir {
					for _, uk := range proposed {
						if uk.User == u.name {
							for _, k := range uk.Keys {
								lines = append(lines, k.Line)
							}
						}
					}
				} else if (eff.Value("strictmodes") != "yes" || safePath(f, u.uid)) && readableBy(f, u.uid) {
					lines = readLines(f)
				}
				if usableKey(lines) {
					ok = true
					break
				}
			}
		}
		if ok {
			a.WithKeys = append(a.WithKeys, u.name)
		} else if hasPassword {
			a.LockedOut = append(a.LockedOut, u.name)
		}
	}
	if len(a.WithKeys) == 0 {
		who := "everyone"
		if len(a.LockedOut) > 0 {
			who = strings.Join(a.LockedOut, ", ") + ", who log in with a password now,"
		}
		return a, fmt.Errorf("no user who can log in would have a key sshd takes (looked at %s), so %s would be locked out; add yours first: moat ssh keys add --title laptop [--user NAME] ~/.ssh/id_ed25519.pub: %w",
			strings.Join(a.Considered, ", "), who, ErrLockout)
	}
	return a, nil
}

type loginUser struct {
	name, home string
	uid, gid   int
}

// loginUsers reads the accounts that can log in from a passwd file.
func loginUsers(file string) ([]loginUser, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("sshd: reading the accounts: %w", err)
	}
	defer f.Close()
	var out []loginUser
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Split(sc.Text(), ":")
		if len(fl) < 7 {
			continue
		}
		var uid, gid int
		fmt.Sscan(fl[2], &uid)
		fmt.Sscan(fl[3], &gid)
		shell := filepath.Base(fl[6])
		if shell == "" || shell == "nologin" || shell == "false" || shell == "sync" {
			continue
		}
		if fl[0] == "root" || (uid >= 1000 && uid < 65534) {
			out = append(out, loginUser{name: fl[0], home: fl[5], uid: uid, gid: gid})
		}
	}
	return out, sc.Err()
}

// shadowHashes reads the password hashes of a shadow file; none when it
// cannot be read.
func shadowHashes(file string) map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile(file)
	if err != nil {
		return out
	}
	for line := range strings.Lines(string(b)) {
		if fl := strings.Split(line, ":"); len(fl) > 1 {
			out[fl[0]] = fl[1]
		}
	}
	return out
}

// allowed applies AllowUsers, DenyUsers, AllowGroups and DenyGroups (the
// user part of each user pattern) as sshd -T reports them for the user.
func allowed(eff Effective, u loginUser, groups groupInfo) bool {
	match := func(patterns []string, names []string) bool {
		for _, p := range patterns {
			p, _, _ = strings.Cut(p, "@")
			for _, n := range names {
				if ok, _ := path.Match(p, n); ok {
					return true
				}
			}
		}
		return false
	}
	mine := groups.of(u)
	if match(eff.Values("denyusers"), []string{u.name}) || match(eff.Values("denygroups"), mine) {
		return false
	}
	if allow := eff.Values("allowusers"); len(allow) > 0 && !match(allow, []string{u.name}) {
		return false
	}
	if allow := eff.Values("allowgroups"); len(allow) > 0 && !match(allow, mine) {
		return false
	}
	return true
}

// rootByKey reports whether PermitRootLogin (as sshd -T writes it) lets
// root in with a key and a shell.
func rootByKey(v string) bool {
	return v == "" || v == "yes" || v == "without-password" || v == "prohibit-password"
}

// groupInfo is a group file: group names by gid, and members by name.
type groupInfo struct {
	names   map[int]string
	members map[string][]string
}

// memberships reads a group file; empty when it cannot be read.
func memberships(file string) groupInfo {
	g := groupInfo{names: map[int]string{}, members: map[string][]string{}}
	b, err := os.ReadFile(file)
	if err != nil {
		return g
	}
	for line := range strings.Lines(string(b)) {
		fl := strings.Split(strings.TrimSpace(line), ":")
		if len(fl) < 4 {
			continue
		}
		var gid int
		if _, err := fmt.Sscan(fl[2], &gid); err == nil {
			g.names[gid] = fl[0]
		}
		for _, m := range strings.Split(fl[3], ",") {
			if m != "" {
				g.members[m] = append(g.members[m], fl[0])
			}
		}
	}
	return g
}

// of lists u's groups: the primary and the others.
func (g groupInfo) of(u loginUser) []string {
	var out []string
	if n, ok := g.names[u.gid]; ok {
		out = append(out, n)
	}
	return append(out, g.members[u.name]...)
}

// keysAllowed reports whether a key alone logs the user in:
// PubkeyAuthentication on, and AuthenticationMethods asking for no more
// than a key in one of its lists. (moat's hardening sets the first; a
// Match block may still turn it off.)
func keysAllowed(eff Effective) bool {
	if v := eff.Value("pubkeyauthentication"); v != "" && v != "yes" {
		return false
	}
	methods := eff.Values("authenticationmethods")
	if len(methods) == 0 || methods[0] == "any" {
		return true
	}
	for _, list := range methods {
		only := true
		for _, m := range strings.Split(list, ",") {
			if m != "publickey" {
				only = false
			}
		}
		if only {
			return true
		}
	}
	return false
}

// keyFiles are the files sshd reads a user's keys from, its tokens
// expanded and relative paths taken from the home directory.
func keyFiles(eff Effective, u loginUser) []string {
	var out []string
	for _, f := range eff.Values("authorizedkeysfile") {
		if f == "none" {
			continue
		}
		f = strings.NewReplacer("%%", "%", "%h", u.home, "%u", u.name, "%U", fmt.Sprint(u.uid)).Replace(f)
		if !filepath.IsAbs(f) {
			f = filepath.Join(u.home, f)
		}
		out = append(out, f)
	}
	return out
}

// safePath applies sshd's StrictModes to a key file: it and every
// directory above it owned by root or the user, and writable by nobody
// else.
func safePath(file string, uid int) bool {
	for p := file; ; p = filepath.Dir(p) {
		if !safe(p, uid) {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

// safe reports whether p alone is owned by root or uid and writable by
// nobody else.
func safe(p string, uid int) bool {
	fi, err := os.Stat(p)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && (st.Uid == 0 || int(st.Uid) == uid) && fi.Mode().Perm()&0o022 == 0
}

// readableBy reports whether uid can read file, as sshd does for a
// user's keys (it reads them as the user): every directory above it
// searchable, the file readable, by its owner bits when uid owns it and
// by the others' bits when not. Root reads everything.
func readableBy(file string, uid int) bool {
	if uid == 0 {
		return true
	}
	for p, need := file, os.FileMode(0o004); ; p, need = filepath.Dir(p), 0o001 {
		fi, err := os.Stat(p)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		perm := fi.Mode().Perm()
		if int(st.Uid) == uid {
			perm >>= 6
		}
		if perm&need == 0 {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

func readLines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// usableKey reports whether lines hold a key sshd takes for a plain
// login: one ParseKey accepts, without an option that stops it.
func usableKey(lines []string) bool {
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, err := ParseKey(line)
		if err != nil {
			continue
		}
		plain := true
		for _, o := range k.Options {
			name, _, _ := strings.Cut(strings.ToLower(o), "=")
			switch name {
			case "command", "from", "expiry-time", "cert-authority", "principals":
				plain = false
			}
		}
		if plain {
			return true
		}
	}
	return false
}
