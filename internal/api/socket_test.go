package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// nobody is the unprivileged user the helper process runs as.
const nobody = 65534

// The helper process: the test binary run again as nobody, which dials
// the socket named in MOAT_TEST_PEER_SOCKET and prints what happened.
func TestMain(m *testing.M) {
	if path := os.Getenv("MOAT_TEST_PEER_SOCKET"); path != "" {
		os.Exit(peerHelper(path))
	}
	os.Exit(m.Run())
}

func peerHelper(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Printf("uid=%d\n", os.Getuid())
	c, err := DialControl(ctx, path)
	if err != nil {
		fmt.Printf("dial: nodaemon=%v: %v\n", errors.Is(err, ErrNoDaemon), err)
		return 0
	}
	var st StateResponse
	if err := c.Do(ctx, "GET", "/v1/state", nil, &st); err != nil {
		fmt.Printf("request: %v\n", err)
		return 0
	}
	fmt.Printf("answered: revision %d\n", st.Revision)
	return 0
}

// serveAPI serves the API with a fresh store on ln, as the daemon does.
func serveAPI(t *testing.T, ln net.Listener, log *slog.Logger) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: (&Server{Store: st, Log: log}).Handler(), ConnContext: ControlContext}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		st.Close()
	})
	return st
}

// asNobody runs the helper process as nobody against the socket at path.
// The test binary is copied into dir first, since the build directory is
// not reachable for nobody.
func asNobody(t *testing.T, dir, path string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "api.test")
	if _, err := os.Stat(bin); err != nil {
		data, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MOAT_TEST_PEER_SOCKET="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process as uid %d: %v\n%s", nobody, err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("uid=%d\n", nobody)) {
		t.Fatalf("helper process did not run as uid %d:\n%s", nobody, out)
	}
	return string(out)
}

// publicDir makes a directory every user can enter, outside t.TempDir,
// whose directories are private to root.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "moat-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root, to run a helper process as another user (uid 65534)")
	}
}

// TestControlRefusesNonRootPeer checks the peer-credential check itself,
// on a socket that anyone may connect to, so that only the check can turn
// nobody away.
func TestControlRefusesNonRootPeer(t *testing.T) {
	needRoot(t)
	dir := publicDir(t)
	path := filepath.Join(dir, "open.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	serveAPI(t, &peerListener{Listener: ln, log: log, self: os.Getuid()}, log)

	out := asNobody(t, dir, path)
	if !strings.Contains(out, "request: ") || strings.Contains(out, "answered") {
		t.Errorf("nobody got an answer from the control socket, or failed to connect at all:\n%s", out)
	}
	// The refusal is logged, with who it was.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "refused a connection from a user that is not root") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, "refused a connection from a user that is not root") || !strings.Contains(l, fmt.Sprintf("uid=%d", nobody)) {
		t.Errorf("the refusal is not logged with the peer's uid:\n%s", l)
	}

	// The listener still serves root after turning nobody away.
	c, err := DialControl(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(context.Background(), "GET", "/v1/state", nil, &StateResponse{}); err != nil {
		t.Errorf("root after a refused peer: %v", err)
	}
}

// TestControlSocketIsRootOnly checks ListenControl's socket as it is made:
// mode 0600, so nobody cannot even connect, and is told to use root rather
// than falling back to the store as if no daemon ran.
func TestControlSocketIsRootOnly(t *testing.T) {
	needRoot(t)
	dir := publicDir(t)
	path := filepath.Join(dir, "moat.sock")
	ln, err := ListenControl(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serveAPI(t, ln, slog.New(slog.DiscardHandler))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("control socket mode %v, want a socket with 0600", fi.Mode())
	}
	out := asNobody(t, dir, path)
	if !strings.Contains(out, "dial: nodaemon=false") || !strings.Contains(out, "permission denied") || !strings.Contains(out, "run moat as root") {
		t.Errorf("nobody dialing the root-only socket: want a permission error that says to use root, not ErrNoDaemon:\n%s", out)
	}
}

func TestControlRecordsRootPeerAsActor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "moat")
	path := filepath.Join(dir, "moat.sock")
	ln, err := ListenControl(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st := serveAPI(t, ln, slog.New(slog.DiscardHandler))
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory: %v, %v; want mode 0700", fi.Mode(), err)
	}

	c, err := DialControl(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Daemon {
		t.Error("a client of the control socket says it is not talking to a daemon")
	}
	var res ChangeResponse
	a := config.App{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000"}
	if err := c.Do(context.Background(), "POST", "/v1/apps", a, &res); err != nil {
		t.Fatal(err)
	}
	es, err := st.Activity(context.Background(), store.Query{Target: "gitea"})
	if err != nil {
		t.Fatal(err)
	}
	who := fmt.Sprintf("uid %d (pid %d)", os.Getuid(), os.Getpid())
	if os.Getuid() == 0 {
		who = fmt.Sprintf("root (pid %d)", os.Getpid())
	}
	if len(es) != 1 || es[0].Who != who || es[0].From != "control socket" || es[0].Action != "app.add" {
		t.Errorf("activity: %+v; want one app.add by %q from \"control socket\"", es, who)
	}
}

func TestListenControlExistingPath(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Run("live socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.sock")
		ln, err := ListenControl(path, log)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // answer dials, as a daemon would
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ln2, err := ListenControl(path, log)
		if err == nil {
			ln2.Close()
			t.Fatal("a second ListenControl on a live socket succeeded")
		}
		if !strings.Contains(err.Error(), "another moat daemon is running") || !strings.Contains(err.Error(), path) {
			t.Errorf("error: %v", err)
		}
		// The first daemon's socket is still there and answers.
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the refused second listen broke the first: %v", err)
		}
		c.Close()
	})
	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.sock")
		old, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		old.(*net.UnixListener).SetUnlinkOnClose(false) // as after kill -9
		old.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("no stale socket: %v", err)
		}
		if _, err := DialControl(context.Background(), path); !errors.Is(err, ErrNoDaemon) {
			t.Errorf("DialControl on a stale socket: %v; want ErrNoDaemon", err)
		}
		ln, err := ListenControl(path, log)
		if err != nil {
			t.Fatalf("a stale socket was not replaced: %v", err)
		}
		defer ln.Close()
		serveAPI(t, ln, log)
		c, err := DialControl(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Do(context.Background(), "GET", "/v1/state", nil, &StateResponse{}); err != nil {
			t.Errorf("the new socket does not answer: %v", err)
		}
	})
	t.Run("regular file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.sock")
		if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		ln, err := ListenControl(path, log)
		if err == nil {
			ln.Close()
			t.Fatal("ListenControl replaced a regular file")
		}
		if !strings.Contains(err.Error(), "is not a socket") || !strings.Contains(err.Error(), "move it away") {
			t.Errorf("error: %v", err)
		}
		if data, err := os.ReadFile(path); err != nil || string(data) != "keep me" {
			t.Errorf("the file was touched: %q, %v", data, err)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		_, err := DialControl(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
		if !errors.Is(err, ErrNoDaemon) {
			t.Errorf("DialControl with no socket: %v; want ErrNoDaemon", err)
		}
	})
}
