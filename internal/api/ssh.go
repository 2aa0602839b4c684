package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"moat/internal/config"
	"moat/internal/sshd"
)

// SSHKey is a key as GET /v1/ssh/keys lists it: what is stored, and what
// the key is.
type SSHKey struct {
	config.SSHKey
	sshd.Key
	// Warning is said of a key accepted with a caveat (RSA 2048).
	Warning string `json:"warning,omitempty"`
}

// AddKeyRequest is the body of POST /v1/ssh/keys.
type AddKeyRequest struct {
	Title string `json:"title"`
	// User is the account the key logs in as; root when empty.
	User string `json:"user,omitempty"`
	// Key is the authorized_keys line (a .pub file's contents).
	Key string `json:"key"`
}

// AddKeyResponse is what adding a key did.
type AddKeyResponse struct {
	ChangeResponse
	Key SSHKey `json:"key"`
}

func (s *Server) sshRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/ssh/keys", s.listKeys)
	mux.HandleFunc("POST /v1/ssh/keys", s.addKey)
	mux.HandleFunc("DELETE /v1/ssh/keys", s.removeKey)
}

// describe reads a stored key for a listing.
func describe(k config.SSHKey) SSHKey {
	pk, warning, _ := sshd.ParseKey(k.Key)
	return SSHKey{SSHKey: k, Key: pk, Warning: warning}
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := []SSHKey{}
	for _, k := range st.SSH.Keys {
		out = append(out, describe(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) addKey(w http.ResponseWriter, r *http.Request) {
	var req AddKeyRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	// A private key is refused before anything else, and never repeated
	// back, not even in the error.
	if _, _, err := sshd.ParseKey(req.Key); sshd.IsLeaked(err) {
		s.fail(w, inputError{&config.FieldError{Field: "key", Value: "(a private key, not shown)", Problem: "is a PRIVATE key, which must never leave its computer", Fix: "treat it as leaked: remove its public key wherever it is authorized, make a new key with ssh-keygen -t ed25519, and add the .pub file"}})
		return
	}
	ctx := r.Context()
	k := config.SSHKey{Title: req.Title, User: req.User, Key: req.Key, AddedBy: actor(ctx).Who, AddedAt: time.Now().UTC().Truncate(time.Second)}
	res, err := s.change(ctx, r.URL.Query().Get("dry_run") == "true", func(st *config.State) error {
		st.SSH.Keys = append(st.SSH.Keys, k)
		return nil
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	k.User = strings.TrimSpace(k.User)
	if k.User == "" {
		k.User = config.DefaultSSHUser
	}
	k.Key = describe(k).Line
	writeJSON(w, http.StatusOK, AddKeyResponse{ChangeResponse: res, Key: describe(k)})
}

// removeKey removes the key named by ?key= (its title or its SHA256
// fingerprint). It needs ?confirm=true: a key removed may be the way in of
// the person removing it.
func (s *Server) removeKey(w http.ResponseWriter, r *http.Request) {
	which := strings.TrimSpace(r.URL.Query().Get("key"))
	if which == "" {
		s.fail(w, inputError{errors.New("say which key: ?key=TITLE or ?key=SHA256:... (moat ssh keys list shows both)")})
		return
	}
	confirmed := r.URL.Query().Get("confirm") == "true"
	s.update(w, r, func(st *config.State) error {
		var match []int
		for i, k := range st.SSH.Keys {
			pk, _, _ := sshd.ParseKey(k.Key)
			if k.Title == which || pk.Fingerprint == which {
				match = append(match, i)
			}
		}
		switch {
		case len(match) == 0:
			return notFound(fmt.Sprintf("no key is called %s, nor has that fingerprint (moat ssh keys list shows them)", which))
		case len(match) > 1:
			var titles []string
			for _, i := range match {
				titles = append(titles, st.SSH.Keys[i].Title+" ("+st.SSH.Keys[i].User+")")
			}
			return inputError{fmt.Errorf("%s names %d keys: %s; remove one by its title", which, len(match), strings.Join(titles, ", "))}
		case !confirmed:
			k := st.SSH.Keys[match[0]]
			return inputError{fmt.Errorf("removing key %s of %s can cut off whoever logs in with it, maybe you: confirm it (moat ssh keys remove --yes, or confirm=true)", k.Title, k.User)}
		}
		gone := st.SSH.Keys[match[0]]
		st.SSH.Keys = slices.Delete(st.SSH.Keys, match[0], match[0]+1)
		// With password login off, the last key someone gets in with
		// is the last way in.
		if m := s.ssh(); m != nil {
			eff, err := m.Effective(r.Context(), "root")
			if err != nil {
				return fmt.Errorf("refusing to remove key %s of %s: sshd's settings cannot be read to check that someone keeps a way in: %w", gone.Title, gone.User, err)
			}
			if eff.Value("passwordauthentication") == "no" {
				proposed := st.SSHUserKeys()
				if proposed == nil {
					proposed = []sshd.UserKeys{} // none left; nil would mean the files as they are
				}
				if _, err := m.CheckAccess(r.Context(), proposed); errors.Is(err, sshd.ErrLockout) {
					return conflict{fmt.Errorf("refusing to remove key %s of %s: password login is off, and %w", gone.Title, gone.User, err)}
				} else if err != nil {
					return fmt.Errorf("refusing to remove key %s of %s: who keeps a way in cannot be checked: %w", gone.Title, gone.User, err)
				}
			}
		}
		return nil
	})
}
