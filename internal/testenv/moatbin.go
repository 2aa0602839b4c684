package testenv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// moatBuild builds cmd/moat once per test process: a lazily computed
// value, not state that changes.
var moatBuild = sync.OnceValues(func() (string, error) {
	removeStaleBuilds()
	dir := filepath.Join(os.TempDir(), "moat-test-bin-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "moat")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "moat/cmd/moat")...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
})

// MoatBinary returns the path of the moat command built from this tree,
// with the race detector when the tests have it. The build is shared by
// the process's tests and removed by the next test process to start.
func MoatBinary(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("MISSING: the go command is needed on PATH to build moat for a child process (make test installs it)")
	}
	bin, err := moatBuild()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// removeStaleBuilds deletes the builds of test processes that are gone.
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "moat-test-bin-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "moat-test-bin-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// SyncBuffer collects output written by other goroutines or a child
// process while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for a server a test configures by address before starting it.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts is n distinct free ports on 127.0.0.1. They are taken from
// below the kernel's ephemeral range, where no listener on port 0 and no
// outgoing connection (of this test process, or of the test processes of
// the other packages running at the same time) lands, so that the port is
// still free when the test binds it; and their listeners are all open at
// once before they close, so that they are distinct.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				low = v
			}
		}
	}
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("testenv: no free port found below %d", low)
		}
		p := 10000 + rand.IntN(low-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		defer ln.Close()
		ports = append(ports, p)
	}
	return ports
}
