package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"moat/internal/sshd"
)

// SSH is what moat manages of OpenSSH: the public keys it adds, by
// title, to files of its own that sshd reads beside each user's
// ~/.ssh/authorized_keys.
type SSH struct {
	Keys []SSHKey `yaml:"keys,omitempty" json:"keys,omitempty"`
}

// SSHKey is a public key that may log in as User.
type SSHKey struct {
	// Title names the key for people, like laptop or ci-deploy.
	Title string `yaml:"title" json:"title"`
	// User is the account the key logs in as; root when empty.
	User string `yaml:"user,omitempty" json:"user,omitempty"`
	// Key is the authorized_keys line: options, type, key, comment.
	Key string `yaml:"key" json:"key"`
	// AddedBy and AddedAt say who added it and when.
	AddedBy string    `yaml:"added_by,omitempty" json:"added_by,omitempty"`
	AddedAt time.Time `yaml:"added_at,omitempty" json:"added_at,omitzero"`
}

// DefaultSSHUser is the user of a key that names none.
const DefaultSSHUser = "root"

func (s SSH) clone() SSH {
	return SSH{Keys: append([]SSHKey(nil), s.Keys...)}
}

func (s *State) normalizeSSH() {
	for i := range s.SSH.Keys {
		k := &s.SSH.Keys[i]
		k.Title = strings.TrimSpace(k.Title)
		k.User = strings.TrimSpace(k.User)
		if k.User == "" {
			k.User = DefaultSSHUser
		}
		if pk, _, err := sshd.ParseKey(k.Key); err == nil {
			k.Key = pk.Line
		}
	}
}

// validateSSH checks each key and refuses repeats: a title used twice, or
// a key added twice for one user.
func (s State) validateSSH(add func(field, value, problem, fix string)) {
	titles := map[string]int{}
	keys := map[string]int{}
	for i, k := range s.SSH.Keys {
		at := fmt.Sprintf("ssh.keys[%d]", i)
		switch {
		case k.Title == "":
			add(at+".title", "", "is missing", "name the key, like laptop")
		case len(k.Title) > 64 || strings.ContainsFunc(k.Title, unicode.IsControl):
			add(at+".title", k.Title, "is longer than 64 characters or holds control characters", "use a short name, like laptop")
		default:
			if j, dup := titles[k.Title]; dup {
				add(at+".title", k.Title, fmt.Sprintf("is the title of ssh.keys[%d] too", j), "give each key its own title")
			}
			titles[k.Title] = i
		}
		if why := sshd.ValidUser(k.User); why != "" {
			add(at+".user", k.User, why, "give the account the key logs in as, like root or deploy")
		}
		pk, _, err := sshd.ParseKey(k.Key)
		var ke *sshd.KeyError
		switch {
		case errors.As(err, &ke) && ke.Leaked:
			add(at+".key", "(a private key, not shown)", ke.Problem, ke.Fix)
			continue
		case errors.As(err, &ke):
			add(at+".key", shorten(k.Key), ke.Problem, ke.Fix)
			continue
		case err != nil:
			add(at+".key", shorten(k.Key), err.Error(), "give a public key line")
			continue
		}
		id := k.User + " " + pk.Fingerprint
		if j, dup := keys[id]; dup {
			add(at+".key", pk.Fingerprint, fmt.Sprintf("is already authorized for %s, as ssh.keys[%d] (%s)", k.User, j, s.SSH.Keys[j].Title), "add each key once per user")
		}
		keys[id] = i
	}
}

// shorten keeps an error from quoting a whole key.
func shorten(v string) string {
	if len(v) > 40 {
		return v[:37] + "..."
	}
	return v
}

// SSHUserKeys groups the keys by user, for sshd.Manager.SyncKeys. The
// state must be valid.
func (s State) SSHUserKeys() []sshd.UserKeys {
	var out []sshd.UserKeys
	at := map[string]int{}
	for _, k := range s.SSH.Keys {
		i, ok := at[k.User]
		if !ok {
			i = len(out)
			at[k.User] = i
			out = append(out, sshd.UserKeys{User: k.User})
		}
		out[i].Keys = append(out[i].Keys, sshd.TitledKey{Title: k.Title, Line: k.Key})
	}
	return out
}
