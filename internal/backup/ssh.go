package backup

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// SSH is how restic reaches an sftp: repository: with moat's own key,
// never the owner's, and the server's host key kept in a file of moat's,
// learnt at the first connection and checked at every one after.
type SSH struct {
	// Key is the private key file (0600); KnownHosts the host keys.
	Key, KnownHosts string
	User, Host      string
	// Port is the server's SSH port; 0 for 22.
	Port int
}

// command is the ssh command line restic runs for its SFTP session.
// restic reads it as a comma-separated option and splits it at spaces,
// so no part may hold a space, a quote or a comma: the key's and the
// known hosts' paths are moat's data directory's (the user and host are
// validated so already).
func (s SSH) command() (string, error) {
	for _, v := range []string{s.Key, s.KnownHosts, s.User, s.Host} {
		if strings.ContainsAny(v, " \t\n\"',\\") {
			return "", fmt.Errorf("backup: restic cannot be given the SSH setting %q: it holds a space, a quote or a comma; keep moat's data directory on a path without them", v)
		}
	}
	args := []string{"ssh", "-i", s.Key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile=" + s.KnownHosts, "-o", "ServerAliveInterval=60"}
	if s.Port != 0 {
		args = append(args, "-p", strconv.Itoa(s.Port))
	}
	if s.User != "" {
		args = append(args, "-l", s.User)
	}
	return strings.Join(append(args, s.Host, "-s", "sftp"), " "), nil
}

// SSHKey returns the public half of the key at path (an
// authorized_keys line), making the key (ed25519, 0600) when there is
// none yet.
func SSHKey(path, comment string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return "", fmt.Errorf("backup: the SSH key %s: %w: move it away, and moat makes a new one", path, err)
		}
		return authorizedLine(signer.PublicKey(), comment), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("backup: random: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("backup: the SSH key: %w", err)
	}
	return authorizedLine(sp, comment), nil
}

func authorizedLine(k ssh.PublicKey, comment string) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
}
