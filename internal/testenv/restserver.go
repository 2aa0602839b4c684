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

// S3Bin is where make test's dependency script builds gofakes3, an
// S3-compatible server.
const S3Bin = "/var/cache/moat-test/bin/gofakes3-v1.2.0"

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
	dir := t.TempDir()
	addr := startServer(t, "rest-server", RestServerBin, func(addr string) []string {
		return []string{"--path", dir, "--listen", addr, "--no-auth"}
	})
	return &RestServer{URL: "rest:http://" + addr + "/", Dir: dir}
}

// S3 is an S3-compatible server run by the test on loopback, with a
// bucket made.
type S3 struct {
	// URL is a repository URL in its bucket, like
	// s3:http://127.0.0.1:PORT/moat/restic.
	URL string
	// AccessKey and SecretKey are what a client signs with.
	AccessKey, SecretKey string
}

// StartS3 starts an S3-compatible server (gofakes3, its objects in a
// bolt file in a temp dir) for the test, and stops it when the test
// ends.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	dir := t.TempDir()
	addr := startServer(t, "gofakes3", S3Bin, func(addr string) []string {
		return []string{"-host", addr, "-backend", "bolt", "-bolt.db", filepath.Join(dir, "s3.db"), "-initialbucket", "moat", "-quiet"}
	})
	return &S3{URL: "s3:http://" + addr + "/moat/restic", AccessKey: "moat-test", SecretKey: "moat-test-secret"}
}

// startServer runs a server the dependency script built at bin (or
// found on the PATH by name) on a free loopback port with args, until
// the test ends, and returns its address once it listens.
func startServer(t testing.TB, name, bin string, args func(addr string) []string) string {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		found, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("testenv: %s is missing (make test's scripts/test-deps.sh builds it at %s)", name, bin)
		}
		bin = found
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePorts(t, 1)[0])
	cmd := exec.Command(bin, args(addr)...)
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", name, err)
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
			return addr
		}
		select {
		case <-done:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("testenv: %s exited: %s", name, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s did not listen within 10s", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
