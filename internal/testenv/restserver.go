package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RestServerBin is where make test's dependency script builds restic's
// REST server.
const RestServerBin = "/var/cache/moat-test/bin/rest-server"

// RestServer is restic's REST server, run by the test on loopback.
type RestServer struct {
	// URL is the repository URL restic takes, like rest:http://127.0.0.1:PORT/.
	URL string
	// Dir holds the repositories.
	Dir string
}

// StartRestServer starts rest-server (without authentication, on
// loopback, in a temp dir) for the test, and stops it when the test ends.
func StartRestServer(t testing.TB) *RestServer {
	t.Helper()
	bin := RestServerBin
	if _, err := os.Stat(bin); err != nil {
		found, err := exec.LookPath("rest-server")
		if err != nil {
			t.Fatalf("testenv: restic's rest-server is missing (make test's scripts/test-deps.sh builds it at %s)", RestServerBin)
		}
		bin = found
	}
	dir := t.TempDir()
	port := FreePorts(t, 1)[0]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--path", dir, "--listen", addr, "--no-auth")
	log, err := os.Create(filepath.Join(t.TempDir(), "rest-server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start rest-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		log.Close()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("testenv: rest-server exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("testenv: rest-server did not listen within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &RestServer{URL: "rest:http://" + addr + "/", Dir: dir}
}
