package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostgresDir and RedisDir are where make test's dependency script
// unpacks Debian's postgresql and redis-server packages.
const (
	PostgresDir = "/var/cache/moat-test/postgresql"
	RedisDir    = "/var/cache/moat-test/redis"
)

// nobody is the user the test's databases run as: PostgreSQL refuses to
// run as root, and neither needs more.
const nobody = 65534

// Service is a database server the test runs as its own process, with
// its data and configuration in a temp dir of its own. Restart applies a
// changed configuration file.
type Service struct {
	// Name is the program's name: postgres or redis-server.
	Name string
	// Dir holds the data and Config.
	Dir string
	// Config is the server's configuration file (postgresql.conf or
	// redis.conf), for a test to edit and Restart.
	Config string
	// Port is the TCP port it listens on.
	Port int
	// URL is how a client reaches it over TCP on loopback
	// (postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable or
	// redis://127.0.0.1:PORT/0).
	URL string

	ns    *Netns
	start func() (*exec.Cmd, error)
	cmd   *exec.Cmd
	done  chan struct{}
	log   string
	ready func(context.Context) error
}

// DatabaseOptions say where a test's database listens.
type DatabaseOptions struct {
	// Netns runs it inside that namespace; nil runs it on the host, where
	// Listen must be loopback.
	Netns *Netns
	// Listen is the addresses it binds: PostgreSQL's listen_addresses
	// ("localhost", "*") or Redis's bind ("127.0.0.1 ::1", "* -::*").
	// Empty is loopback.
	Listen string
	// Port is its TCP port; 0 picks a free one on the host, or the
	// server's usual port (5432, 6379) in a namespace.
	Port int
}

// StartPostgres runs PostgreSQL for the test: a cluster of its own
// (initdb, user postgres, trust authentication), stopped when the test
// ends. It needs root (it runs as nobody) and the unpacked packages.
func StartPostgres(t testing.TB, o DatabaseOptions) *Service {
	t.Helper()
	s, err := LaunchPostgres(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartRedis runs redis-server for the test, without persistence,
// stopped when the test ends.
func StartRedis(t testing.TB, o DatabaseOptions) *Service {
	t.Helper()
	s, err := LaunchRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// LaunchPostgres is StartPostgres for a TestMain that shares one server
// among a package's tests; the caller Stops it.
func LaunchPostgres(o DatabaseOptions) (*Service, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	s, err := newService("postgres", o, 5432)
	if err != nil {
		return nil, err
	}
	if o.Listen == "" {
		o.Listen = "localhost"
	}
	data := filepath.Join(s.Dir, "data")
	initdb := exec.Command(filepath.Join(filepath.Dir(bin), "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--locale=C", "-E", "UTF8", "--no-sync")
	asNobody(initdb)
	if out, err := initdb.CombinedOutput(); err != nil {
		s.remove()
		return nil, fmt.Errorf("testenv: initdb: %v: %s", err, out)
	}
	s.Config = filepath.Join(data, "postgresql.conf")
	conf := fmt.Sprintf("\n# the test's own\nlisten_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\nfsync = off\nshared_buffers = 16MB\nmax_connections = 50\n",
		o.Listen, s.Port, s.Dir)
	if err := appendFile(s.Config, conf); err != nil {
		s.remove()
		return nil, err
	}
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
	s.start = func() (*exec.Cmd, error) {
		cmd := exec.Command(bin, "-D", data)
		asNobody(cmd)
		return cmd, nil
	}
	// Ready once postmaster.pid's status line says so.
	s.ready = func(ctx context.Context) error {
		for ctx.Err() == nil {
			b, _ := os.ReadFile(filepath.Join(data, "postmaster.pid"))
			if lines := strings.Split(string(b), "\n"); len(lines) > 7 && strings.TrimSpace(lines[7]) == "ready" {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return ctx.Err()
	}
	return s, s.run()
}

// LaunchRedis is StartRedis for a TestMain; the caller Stops it.
func LaunchRedis(o DatabaseOptions) (*Service, error) {
	bin := filepath.Join(RedisDir, "usr/bin/redis-server")
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, fmt.Errorf("testenv: redis-server is missing (make test's scripts/test-deps.sh unpacks it at %s)", RedisDir)
		}
	}
	s, err := newService("redis-server", o, 6379)
	if err != nil {
		return nil, err
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1"
	}
	sock := filepath.Join(s.Dir, "redis.sock")
	s.Config = filepath.Join(s.Dir, "redis.conf")
	conf := fmt.Sprintf("bind %s\nport %d\nunixsocket %s\ndir %s\nsave \"\"\nappendonly no\ndaemonize no\nprotected-mode no\nloglevel warning\n",
		o.Listen, s.Port, sock, s.Dir)
	if err := os.WriteFile(s.Config, []byte(conf), 0o644); err != nil {
		s.remove()
		return nil, fmt.Errorf("testenv: %w", err)
	}
	s.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", s.Port)
	s.start = func() (*exec.Cmd, error) {
		cmd := exec.Command(bin, s.Config)
		asNobody(cmd)
		return cmd, nil
	}
	// Ready once it answers PING on its Unix socket.
	s.ready = func(ctx context.Context) error {
		for ctx.Err() == nil {
			if c, err := net.Dial("unix", sock); err == nil {
				c.SetDeadline(time.Now().Add(time.Second))
				fmt.Fprint(c, "PING\r\n")
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if strings.TrimSpace(line) == "+PONG" {
					return nil
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return ctx.Err()
	}
	return s, s.run()
}

// postgresBin finds the unpacked postgres, or the installed one.
func postgresBin() (string, error) {
	for _, dir := range []string{PostgresDir + "/usr/lib/postgresql", "/usr/lib/postgresql"} {
		found, _ := filepath.Glob(dir + "/*/bin/postgres")
		if len(found) > 0 {
			sort.Strings(found)
			return found[len(found)-1], nil
		}
	}
	return "", fmt.Errorf("testenv: PostgreSQL is missing (make test's scripts/test-deps.sh unpacks it at %s)", PostgresDir)
}

func newService(name string, o DatabaseOptions, usual int) (*Service, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("testenv: %s runs as nobody, which needs root", name)
	}
	port := o.Port
	switch {
	case port != 0:
	case o.Netns != nil:
		port = usual
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testenv: a free port: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	removeStaleServices(name)
	// Its own dir, reachable by nobody (a test's TempDir is not), with
	// the test's pid in it so that a later run knows it for stale.
	dir, err := os.MkdirTemp("", "moat-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.pid"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: %w", err)
	}
	return &Service{Name: name, Dir: dir, Port: port, ns: o.Netns, log: filepath.Join(dir, name+".log")}, nil
}

// removeStaleServices removes the dirs of servers that tests which are
// no longer running left behind (their servers died with them).
func removeStaleServices(name string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "moat-"+name+"-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "test.pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(b)); err == nil && syscall.Kill(pid, 0) != nil {
			os.RemoveAll(dir)
		}
	}
}

func asNobody(cmd *exec.Cmd) {
	// Pdeathsig: a test binary that dies leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}, Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// run starts the server (in its namespace) and waits until it is ready.
func (s *Service) run() error {
	cmd, err := s.start()
	if err != nil {
		s.remove()
		return err
	}
	log, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.remove()
		return fmt.Errorf("testenv: %w", err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	start := cmd.Start
	if s.ns != nil {
		// Started from a thread inside the namespace, the server is in it.
		start = func() error { return s.ns.Do(cmd.Start) }
	}
	if err := start(); err != nil {
		s.remove()
		return fmt.Errorf("testenv: start %s: %w", s.Name, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := s.ready(ctx); err != nil {
		s.Stop()
		b, _ := os.ReadFile(s.log)
		return fmt.Errorf("testenv: %s did not become ready: %w: %s", s.Name, err, b)
	}
	return nil
}

// Restart stops the server and starts it again on the same data, so
// that a changed Config takes effect.
func (s *Service) Restart(t testing.TB) {
	t.Helper()
	s.halt()
	if err := s.run(); err != nil {
		t.Fatal(err)
	}
}

// Pid is the server's process id (its network namespace's /proc entry).
func (s *Service) Pid() int { return s.cmd.Process.Pid }

// halt stops the process, fast shutdown first, and waits for it.
func (s *Service) halt() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
}

// Stop ends the server and removes its dir.
func (s *Service) Stop() {
	s.halt()
	s.remove()
}

func (s *Service) remove() {
	if err := os.RemoveAll(s.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "testenv: removing %s: %v\n", s.Dir, err)
	}
}
