package daemon

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/sshd"
	"moat/internal/store"
	"moat/internal/testenv"
)

// sshLab is a real sshd that includes a drop-in directory, and moat's
// manager of it, with the keys in a directory only root can write (as
// StrictModes demands).
type sshLab struct {
	sshd *testenv.SSHD
	m    *sshd.Manager
	dir  string
}

func newSSHLab(t *testing.T, users ...testenv.User) *sshLab {
	t.Helper()
	dir := testenv.PrivateDir(t)
	dropIns := filepath.Join(dir, "sshd_config.d")
	if err := os.Mkdir(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	s := testenv.StartSSHD(t, testenv.SSHDOptions{Include: filepath.Join(dropIns, "*.conf"), Users: users, Config: []string{"ListenAddress 127.0.0.1", "PasswordAuthentication yes", "PermitRootLogin yes"}})
	m := &sshd.Manager{
		Paths:  sshd.Paths{SSHD: s.Binary(), Config: s.Config, DropInDir: dropIns, KeysDir: filepath.Join(dir, "keys"), Passwd: s.Passwd, Shadow: s.Shadow, Group: s.Group},
		Reload: s.Reload,
	}
	return &sshLab{sshd: s, m: m, dir: dir}
}

// keyPair makes an ed25519 key pair for a client; it returns the private
// key's file and the public key's line.
func keyPair(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	priv := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", priv).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(priv + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return priv, strings.TrimSpace(string(pub))
}

// TestSSHKeysLogIn: a key added through moat logs in with a real ssh
// client against a real sshd; removed (with the confirmation), it is
// refused. The user's own authorized_keys is not written.
func TestSSHKeysLogIn(t *testing.T) {
	l := newSSHLab(t)
	e := startEnv(t, withSSH(l.m))
	ctx := context.Background()
	priv, pub := keyPair(t, t.TempDir(), "laptop")
	login := func() error { return testenv.SSHKey(nil, "127.0.0.1", l.sshd.Port, "root", priv) }
	if err := login(); err == nil {
		t.Fatal("the key logs in before it was added")
	}
	own, _ := os.Stat("/root/.ssh/authorized_keys")

	var res api.AddKeyResponse
	if err := e.client.Do(ctx, "POST", "/v1/ssh/keys", api.AddKeyRequest{Title: "laptop", Key: pub}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Warning != "" || res.Key.Type != "ssh-ed25519" || res.Key.SSHKey.User != "root" {
		t.Fatalf("added: %+v", res)
	}
	if err := login(); err != nil {
		t.Fatalf("the added key does not log in: %v", err)
	}
	fi, err := os.Stat(filepath.Join(l.dir, "keys", "root"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("moat's key file: %v, %v; want mode 0644", fi, err)
	}
	if now, _ := os.Stat("/root/.ssh/authorized_keys"); (own == nil) != (now == nil) || (own != nil && !own.ModTime().Equal(now.ModTime())) {
		t.Error("root's own authorized_keys was written")
	}
	var keys []api.SSHKey
	if err := e.client.Do(ctx, "GET", "/v1/ssh/keys", nil, &keys); err != nil || len(keys) != 1 || keys[0].Title != "laptop" || !strings.HasPrefix(keys[0].Fingerprint, "SHA256:") || keys[0].AddedBy == "" {
		t.Errorf("list: %+v, %v", keys, err)
	}

	// Removing needs the confirmation.
	err = e.client.Do(ctx, "DELETE", "/v1/ssh/keys?key=laptop", nil, nil)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(err.Error(), "confirm") {
		t.Errorf("remove without confirm: %v", err)
	}
	if err := login(); err != nil {
		t.Fatalf("a refused remove cut the key off: %v", err)
	}
	if err := e.client.Do(ctx, "DELETE", "/v1/ssh/keys?confirm=true&key="+url.QueryEscape(keys[0].Fingerprint), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := login(); err == nil {
		t.Error("the removed key still logs in")
	}
}

// TestSSHHardenThroughMoat: moat ssh harden through the daemon is refused
// without a key (and changes nothing), rolls back by itself without a
// confirmation, stays when confirmed, and rolls back at start when moat
// stopped before the confirmation.
func TestSSHHardenThroughMoat(t *testing.T) {
	l := newSSHLab(t, testenv.User{Name: "alice", Password: "alice-pw"}, testenv.User{Name: "root"})
	e := startEnv(t, withSSH(l.m))
	ctx := context.Background()
	password := func() error { return testenv.SSHPassword(nil, "127.0.0.1", l.sshd.Port, "alice", "alice-pw") }
	harden := func() error {
		return e.client.Do(ctx, "POST", "/v1/ssh/harden", api.HardenRequest{ConfirmWithin: "10s"}, &api.HardenResponse{})
	}
	err := harden()
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("harden without a key: %v, want a 409 naming alice", err)
	}
	if err := password(); err != nil {
		t.Fatalf("after the refusal: %v", err)
	}
	priv, pub := keyPair(t, t.TempDir(), "laptop")
	if err := e.client.Do(ctx, "POST", "/v1/ssh/keys", api.AddKeyRequest{Title: "laptop", Key: pub}, nil); err != nil {
		t.Fatal(err)
	}
	var audit api.AuditResponse
	if err := e.client.Do(ctx, "GET", "/v1/ssh/audit", nil, &audit); err != nil || len(audit.Findings) == 0 {
		t.Fatalf("audit before: %+v, %v", audit, err)
	}
	// The host's audit says the same, with the fix: moat ssh harden.
	hostAudit := func() (failed, passed []string) {
		t.Helper()
		var rep struct {
			Findings []struct{ Check, Fix string }
			Passed   []string
		}
		if err := e.client.Do(ctx, "GET", "/v1/audit", nil, &rep); err != nil {
			t.Fatal(err)
		}
		for _, f := range rep.Findings {
			// ssh.extra is what harden leaves to the owner, by design.
			if strings.HasPrefix(f.Check, "ssh.") && f.Check != "ssh.extra" {
				failed = append(failed, f.Check)
				if !strings.Contains(f.Fix, "moat ssh harden") {
					t.Errorf("%s's fix: %s", f.Check, f.Fix)
				}
			}
		}
		for _, c := range rep.Passed {
			if strings.HasPrefix(c, "ssh.") && c != "ssh.extra" {
				passed = append(passed, c)
			}
		}
		return failed, passed
	}
	if failed, _ := hostAudit(); !slices.Contains(failed, "ssh.passwordauthentication") {
		t.Errorf("the host's audit before hardening: %v", failed)
	}

	// No confirmation: the previous settings come back.
	if err := harden(); err != nil {
		t.Fatal(err)
	}
	if err := password(); err == nil {
		t.Fatal("password login works after hardening")
	}
	if err := testenv.SSHKey(nil, "127.0.0.1", l.sshd.Port, "root", priv); err != nil {
		t.Fatalf("root's key after hardening: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for password() != nil {
		if time.Now().After(deadline) {
			t.Fatal("password login did not come back 20s after a 10s window")
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Confirmed, from another session than the hardening's: it stays.
	if err := e.client.Do(ctx, "POST", "/v1/ssh/harden", api.HardenRequest{ConfirmWithin: "1m", SSHConnection: "198.51.100.9 50001 10.0.0.1 22"}, nil); err != nil {
		t.Fatal(err)
	}
	err = e.client.Do(ctx, "POST", "/v1/ssh/confirm", api.ConfirmRequest{SSHConnection: "198.51.100.9 50001 10.0.0.1 22"}, nil)
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "NEW SSH session") {
		t.Errorf("confirm from the hardening's own session: %v, want a 409", err)
	}
	if err := e.client.Do(ctx, "POST", "/v1/ssh/confirm", api.ConfirmRequest{SSHConnection: "198.51.100.9 50002 10.0.0.1 22"}, &audit); err != nil {
		t.Fatal(err)
	}
	if len(audit.Findings) != 0 || audit.Pending {
		t.Errorf("audit after the confirmation: %+v", audit)
	}
	if failed, passed := hostAudit(); len(failed) != 0 || len(passed) != len(sshd.Recommended) {
		t.Errorf("the host's audit after hardening: failed %v, passed %v", failed, passed)
	}
	// With passwords off, the last key is the last way in.
	err = e.client.Do(ctx, "DELETE", "/v1/ssh/keys?confirm=true&key=laptop", nil, nil)
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "password login is off") {
		t.Errorf("removing the last key after hardening: %v, want a 409", err)
	}

	// Not confirmed when moat stops: moat puts back what the hardening
	// replaced (here: the confirmed hardening) as it stops.
	if err := e.client.Do(ctx, "POST", "/v1/ssh/harden", api.HardenRequest{ConfirmWithin: "1h"}, nil); err != nil {
		t.Fatal(err)
	}
	e.shutdown()
	e.start()
	var entries []store.Entry
	if err := e.client.Do(ctx, "GET", "/v1/activity?target=sshd", nil, &entries); err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, x := range entries {
		actions[x.Action]++
	}
	if actions["ssh.harden"] != 3 || actions["ssh.confirm"] != 1 || actions["ssh.rollback"] != 2 {
		t.Errorf("activity %v: want 3 hardenings, 1 confirmation, 2 rollbacks", actions)
	}
	if err := password(); err == nil {
		t.Error("the confirmed hardening did not come back at start")
	}
}

// TestSSHPortMove: moat ssh harden --port opens the new port in the
// firewall before sshd listens there, keeps the old one open in both
// until the confirmation, and closes it in both after.
func TestSSHPortMove(t *testing.T) {
	gl := newGuardLab(t)
	dir := testenv.PrivateDir(t)
	dropIns := filepath.Join(dir, "sshd_config.d")
	if err := os.Mkdir(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	s := testenv.StartSSHD(t, testenv.SSHDOptions{Netns: gl.host, DefaultPort: true, Include: filepath.Join(dropIns, "*.conf"), Users: []testenv.User{{Name: "root"}}})
	m := &sshd.Manager{Paths: sshd.Paths{SSHD: s.Binary(), Config: s.Config, DropInDir: dropIns, KeysDir: filepath.Join(dir, "keys"), Passwd: s.Passwd, Shadow: s.Shadow, Group: s.Group}, Reload: s.Reload}
	e := startEnv(t, withSSH(m), withFirewall(firewall.NewManager(gl.nft)))
	ctx := context.Background()
	e.change(func(st *config.State) { st.Firewall.Rules = []config.FirewallRule{{Port: "22/tcp", Comment: "ssh"}} })
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	priv, pub := keyPair(t, t.TempDir(), "laptop")
	if err := e.client.Do(ctx, "POST", "/v1/ssh/keys", api.AddKeyRequest{Title: "laptop", Key: pub}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Do(ctx, "POST", "/v1/ssh/harden", api.HardenRequest{ConfirmWithin: "1m", Port: 2222}, nil); err != nil {
		t.Fatal(err)
	}
	login := func(port int) error { return testenv.SSHKey(gl.attacker, labHost, port, "root", priv) }
	if err := login(2222); err != nil {
		log, _ := os.ReadFile(s.Log)
		t.Fatalf("the new port during the trial: %v\n%s", err, log)
	}
	if err := login(22); err != nil {
		t.Fatalf("the old port during the trial: %v", err)
	}
	// Not from a session on the old port: it proves nothing of the new.
	err := e.client.Do(ctx, "POST", "/v1/ssh/confirm", api.ConfirmRequest{SSHConnection: labAttacker + " 50000 " + labHost + " 22"}, nil)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "not on the new port 2222") {
		t.Fatalf("confirming a port move from the old port: %v, want a 409", err)
	}
	if err := e.client.Do(ctx, "POST", "/v1/ssh/confirm", api.ConfirmRequest{SSHConnection: labAttacker + " 50001 " + labHost + " 2222"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := login(2222); err != nil {
		t.Errorf("the new port after the confirmation: %v", err)
	}
	if reaches(gl.attacker, labHost, 22) {
		t.Error("port 22 is still open after the confirmation")
	}
	var cur api.StateResponse
	if err := e.client.Do(ctx, "GET", "/v1/state", nil, &cur); err != nil {
		t.Fatal(err)
	}
	if rules := cur.State.Firewall.Rules; len(rules) != 1 || rules[0].Port != "2222/tcp" {
		t.Errorf("firewall rules after the move: %+v, want 2222/tcp alone", rules)
	}
}
