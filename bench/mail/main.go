// Command mail measures moat's SMTP relay: how many messages a second it
// takes into its queue (each kept in the store and synced before the 250)
// on one core, and how much memory it holds while idle.
//
// The relay runs in a child process of its own, GOMAXPROCS=1 and pinned to
// one core, with the real SQLite store (WAL, synchronous=FULL: an fsync per
// accepted message) in a directory on disk; the clients run in this
// process, pinned to another core. Each client logs in once (AUTH PLAIN on
// loopback) and sends messages of -size bytes one after the other on its
// connection. Nothing is delivered: the queue only fills.
//
//	go run ./bench/mail                       # 16 clients, 10 KB, 10 s
//	go run ./bench/mail -conns 1 -duration 5s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/smtp"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"moat/internal/mail"
	"moat/internal/secret"
	"moat/internal/store"
)

const password = "bench-password"

func main() {
	var (
		relay    = flag.Bool("relay", false, "run as the relay (the child this program starts)")
		dir      = flag.String("dir", "", "where the store is kept (on disk; tmpfs has no fsync to pay for); a new directory under /var/tmp when empty")
		addr     = flag.String("addr", "127.0.0.1:18587", "where the relay listens")
		conns    = flag.Int("conns", 16, "clients sending at once")
		size     = flag.Int("size", 10<<10, "bytes a message")
		duration = flag.Duration("duration", 10*time.Second, "how long the clients send")
		warmup   = flag.Duration("warmup", time.Second, "sending before the measurement starts")
		idle     = flag.Int("idle", 100, "idle logged-in connections held open for the memory reading")
		relayCPU = flag.Int("relay-cpu", 0, "the core the relay is pinned to")
		loadCPU  = flag.Int("load-cpu", 1, "the core the clients are pinned to")
	)
	flag.Parse()
	var err error
	if *relay {
		err = runRelay(*dir, *addr, *relayCPU)
	} else {
		err = runBench(*dir, *addr, *conns, *size, *duration, *warmup, *idle, *relayCPU, *loadCPU)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mail bench:", err)
		os.Exit(1)
	}
}

// pinned runs this program again under taskset, pinned to cpu, unless it
// is already: sched_setaffinity pins one thread, taskset every thread a
// process will have. It returns only when the program already runs
// pinned (or there is no such core).
func pinned(cpu int) error {
	if cpu < 0 || cpu >= runtime.NumCPU() || os.Getenv("MOAT_BENCH_CPU") == strconv.Itoa(cpu) {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), "MOAT_BENCH_CPU="+strconv.Itoa(cpu))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		return fmt.Errorf("taskset (util-linux): %w", err)
	}
	os.Exit(0)
	return nil
}

// runRelay is the child: a relay on the real store, reporting its memory
// before and after it listens, and the queue's length when it is stopped.
func runRelay(dir, addr string, cpu int) error {
	if err := pinned(cpu); err != nil {
		return err
	}
	runtime.GOMAXPROCS(1)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "moat.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	// Hashed by the parent: argon2id's 19 MiB would be counted as idle.
	if err := st.SetCredential(ctx, "bench", os.Getenv("MOAT_BENCH_HASH")); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}

	before := heap()
	r := mail.NewRelay(mail.RelayOptions{Store: st, Log: slog.New(slog.DiscardHandler), SpoolDir: dir})
	if err := r.Configure(mail.Settings{
		Listen: []netip.AddrPort{ap}, Domain: "moat.test", Apps: map[string]bool{"bench": true},
		Hourly: 1 << 30, MaxSize: 25 << 20, MaxRecipients: 50,
	}); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { r.Run(ctx, time.Minute); close(done) }()
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("heap %d %d\n", before, heap())
	fmt.Println("ready")

	// Asked by a line on stdin: the heap now (after idle connections).
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			fmt.Printf("heap %d %d\n", before, heap())
		}
	}()
	<-done
	q, err := st.List(context.Background())
	if err != nil {
		return err
	}
	fmt.Printf("queued %d\n", len(q))
	return nil
}

// heap is the Go heap in use after a collection, and the goroutines'
// stacks.
func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

func runBench(dir, addr string, conns, size int, duration, warmup time.Duration, idle, relayCPU, loadCPU int) error {
	if err := pinned(loadCPU); err != nil {
		return err
	}
	if dir == "" {
		d, err := os.MkdirTemp("/var/tmp", "moat-mail-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && fs.Type == unix.TMPFS_MAGIC {
		return fmt.Errorf("%s is on tmpfs, where fsync costs nothing: give -dir on a disk", dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Started pinned, so that its pid is the relay's own.
	child := exec.Command("taskset", "-c", strconv.Itoa(relayCPU), self, "-relay", "-dir", dir, "-addr", addr, "-relay-cpu", strconv.Itoa(relayCPU))
	child.Env = append(os.Environ(), "MOAT_BENCH_CPU="+strconv.Itoa(relayCPU))
	if relayCPU < 0 || relayCPU >= runtime.NumCPU() {
		child = exec.Command(self, "-relay", "-dir", dir, "-addr", addr, "-relay-cpu", "-1")
	}
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	hash, err := secret.Hash(password)
	if err != nil {
		return err
	}
	child.Env = append(child.Environ(), "MOAT_BENCH_HASH="+hash)
	child.Stderr = os.Stderr
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		return err
	}
	defer child.Process.Kill()
	lines := bufio.NewScanner(stdout)
	next := func() (string, error) {
		if !lines.Scan() {
			return "", fmt.Errorf("the relay ended: %v", lines.Err())
		}
		return lines.Text(), nil
	}
	heapLine, err := next()
	if err != nil {
		return err
	}
	if l, err := next(); err != nil || l != "ready" {
		return fmt.Errorf("the relay said %q: %v", l, err)
	}
	fmt.Printf("relay: GOMAXPROCS=1 on CPU %d, store in %s (WAL, synchronous=FULL); clients on CPU %d; %s\n", relayCPU, dir, loadCPU, runtime.Version())
	fmt.Printf("idle, no login yet: %s, %s\n", heapOf(heapLine), rss(child.Process.Pid))

	// Idle logged-in connections: what each one costs.
	var held []*smtp.Client
	for range idle {
		c, err := login(addr)
		if err != nil {
			return err
		}
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond)
	fmt.Fprintln(stdin)
	heapLine, err = next()
	if err != nil {
		return err
	}
	fmt.Printf("with %d idle logged-in connections: %s, %s\n", idle, heapOf(heapLine), rss(child.Process.Pid))
	for _, c := range held {
		c.Quit()
	}

	body := message(size)
	var (
		acks     atomic.Int64
		measured atomic.Bool
		mu       sync.Mutex
		lat      []time.Duration
		wg       sync.WaitGroup
		failure  atomic.Value
	)
	end := time.Now().Add(warmup + duration)
	for range conns {
		wg.Go(func() {
			c, err := login(addr)
			if err != nil {
				failure.Store(err)
				return
			}
			defer c.Quit()
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := send(c, body); err != nil {
					failure.Store(err)
					return
				}
				if measured.Load() {
					acks.Add(1)
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	time.Sleep(warmup)
	measured.Store(true)
	start := time.Now()
	wg.Wait()
	took := time.Since(start)
	if err, _ := failure.Load().(error); err != nil {
		return err
	}
	slices.Sort(lat)
	n := acks.Load()
	fmt.Printf("accepted: %d messages of %d bytes in %.1f s = %.0f msg/s (%d clients); latency p50 %v, p99 %v\n",
		n, size, took.Seconds(), float64(n)/took.Seconds(), conns, pct(lat, 0.5), pct(lat, 0.99))
	fmt.Printf("after the load: %s\n", rss(child.Process.Pid))

	child.Process.Signal(syscall.SIGTERM)
	stdin.Close()
	for {
		l, err := next()
		if err != nil {
			return err
		}
		if q, ok := strings.CutPrefix(l, "queued "); ok {
			fmt.Printf("the queue holds %s messages (every one answered 250, warm-up included)\n", q)
			break
		}
	}
	return child.Wait()
}

func login(addr string) (*smtp.Client, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return nil, err
	}
	if err := c.Auth(smtp.PlainAuth("", "bench", password, "127.0.0.1")); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func message(size int) []byte {
	var b strings.Builder
	b.WriteString("From: bench@moat.test\r\nTo: owner@example.org\r\nSubject: a password reset\r\n\r\n")
	line := "Someone asked to reset the password of your account; if it was you, follow the link.\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String()[:size-2] + "\r\n")
}

func send(c *smtp.Client, body []byte) error {
	if err := c.Mail("bench@moat.test"); err != nil {
		return err
	}
	if err := c.Rcpt("owner@example.org"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	return nil
}

func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	return v[int(float64(len(v)-1)*p)].Round(10 * time.Microsecond)
}

func heapOf(line string) string {
	var before, after uint64
	if _, err := fmt.Sscanf(line, "heap %d %d", &before, &after); err != nil {
		return "heap unknown: " + line
	}
	relay := "under 0.1 MiB"
	if d := mib(after) - mib(before); d >= 0.1 {
		relay = fmt.Sprintf("%.1f MiB", d)
	}
	return fmt.Sprintf("Go heap+stacks %.1f MiB, the relay's share %s", mib(after), relay)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// rss is the child's resident memory, from /proc.
func rss(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "RSS unknown"
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return "RSS " + strings.Join(strings.Fields(v), " ")
		}
	}
	return "RSS unknown"
}
