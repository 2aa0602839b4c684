package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDatabases: PostgreSQL and Redis start as nobody, answer on
// loopback, survive a Restart on their data, and leave no dir or
// process behind.
func TestDatabases(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the test's databases run as nobody, which needs root")
	}
	pg := StartPostgres(t, DatabaseOptions{})
	psql := filepath.Join(filepath.Dir(mustPostgres(t)), "psql")
	query := func(sql string) string {
		t.Helper()
		out, err := exec.Command(psql, pg.URL, "-XAtc", sql).CombinedOutput()
		if err != nil {
			t.Fatalf("psql %q: %v: %s", sql, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')")
	if got := query("SHOW listen_addresses"); got != "localhost" {
		t.Errorf("listen_addresses = %q", got)
	}
	pg.Restart(t)
	if got := query("SELECT v FROM kept"); got != "before restart" {
		t.Errorf("after Restart: %q", got)
	}
	if got := query("SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q", got)
	}

	rd := StartRedis(t, DatabaseOptions{})
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", rd.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "SET k v\r\nGET k\r\n")
	r := bufio.NewReader(c)
	var got []string
	for range 3 {
		line, _ := r.ReadString('\n')
		got = append(got, strings.TrimSpace(line))
	}
	if strings.Join(got, " ") != "+OK $1 v" {
		t.Errorf("redis said %q", got)
	}

	pid, dir := pg.Pid(), pg.Dir
	pg.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is left after Stop: %v", dir, err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("postgres %d runs after Stop", pid)
	}
}

func mustPostgres(t *testing.T) string {
	bin, err := postgresBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
