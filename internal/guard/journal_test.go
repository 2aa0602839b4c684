package guard

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// logRecorder is a slog handler that keeps what it is told, so that a
// test can wait for Run to reach a step and check what it said.
type logRecorder struct {
	mu   sync.Mutex
	recs []string // the message, then " key=value" for each attribute
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, b.String())
	return nil
}

// records returns what was logged with a message that begins with prefix.
func (h *logRecorder) records(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if strings.HasPrefix(r, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// wait waits until n records begin with prefix.
func (h *logRecorder) wait(t *testing.T, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.records(prefix)) < n {
		if time.Now().After(deadline) {
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("waited for %d log records %q; the log:\n%s", n, prefix, strings.Join(h.recs, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// journalCollector gathers what a Journal hands on.
type journalCollector struct {
	mu      sync.Mutex
	msgs    []string
	cursors []string
	stop    int // refuse messages after this many, as a stopping moat would; 0 never
}

func (c *journalCollector) emit(msg, cursor string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop > 0 && len(c.msgs) == c.stop {
		return errStopped
	}
	c.msgs = append(c.msgs, msg)
	c.cursors = append(c.cursors, cursor)
	return nil
}

// wait waits for n messages and returns those there are then.
func (c *journalCollector) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := append([]string(nil), c.msgs...)
		c.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cursor is the one handed on with the last message.
func (c *journalCollector) cursor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cursors) == 0 {
		return ""
	}
	return c.cursors[len(c.cursors)-1]
}

// ports reads sshd's failures in msgs and returns their client ports.
func failurePorts(t *testing.T, msgs []string) []int {
	t.Helper()
	var out []int
	for _, m := range msgs {
		a, ok := SSHD{}.Match(m)
		if !ok {
			t.Errorf("not an sshd failure: %q", m)
			continue
		}
		out = append(out, int(a.Port))
	}
	return out
}

// sshdFailure is the message sshd logs for a failed password.
func sshdFailure(user string, port int) string {
	return fmt.Sprintf("Failed password for %s from 203.0.113.7 port %d ssh2", user, port)
}

// runJournal starts j.Run in the background; the function it returns
// ends it and returns what Run did.
func runJournal(j *Journal, cursor string, c *journalCollector) (done <-chan error, stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- j.Run(ctx, cursor, c.emit) }()
	return ch, func() error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return 10 s after its context ended")
		}
	}
}

// checkGone fails the test if any of the processes is still there: Run
// must have stopped and waited for every journalctl it started.
func checkJournalctlGone(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) == 0 {
		t.Error("no journalctl was started")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("journalctl (pid %d) is still there after Run returned: %v", pid, err)
		}
	}
}

func TestJournalEntries(t *testing.T) {
	cur := fakeCursor(1)
	for _, tc := range []struct {
		name string
		line string
		msgs []string // nil: none
		err  string   // the line is not an entry
	}{
		{"string", `{"MESSAGE":"Failed password for root from 203.0.113.7 port 50122 ssh2","SYSLOG_IDENTIFIER":"sshd","__CURSOR":"` + cur + `"}`,
			[]string{"Failed password for root from 203.0.113.7 port 50122 ssh2"}, ""},
		{"escaped string", `{"MESSAGE":"tab\there \"q\" \u00e9","__CURSOR":"` + cur + `"}`, []string{"tab\there \"q\" é"}, ""},
		{"bytes, not UTF-8", `{"MESSAGE":[70,97,105,108,255,1],"__CURSOR":"` + cur + `"}`, []string{"Fail\xff\x01"}, ""},
		{"null: longer than 4096 bytes", `{"MESSAGE":null,"__CURSOR":"` + cur + `"}`, nil, ""},
		{"no MESSAGE", `{"__CURSOR":"` + cur + `","__REALTIME_TIMESTAMP":"1"}`, nil, ""},
		{"empty", `{"MESSAGE":"","__CURSOR":"` + cur + `"}`, []string{""}, ""},
		{"several values", `{"MESSAGE":["one","two"],"__CURSOR":"` + cur + `"}`, []string{"one", "two"}, ""},
		{"several values, mixed", `{"MESSAGE":["one",[255,10],null],"__CURSOR":"` + cur + `"}`, []string{"one", "\xff\n"}, ""},
		{"not a byte", `{"MESSAGE":[256],"__CURSOR":"` + cur + `"}`, nil, ""},
		{"an object", `{"MESSAGE":{"a":1},"__CURSOR":"` + cur + `"}`, nil, ""},
		{"no cursor", `{"MESSAGE":"x"}`, nil, "without __CURSOR"},
		{"not JSON", `-- No entries --`, nil, "not a journal entry"},
		{"cut short", `{"MESSAGE":"x","__CUR`, nil, "not a journal entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseJournalEntry([]byte(tc.line + "\n"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.cursor != cur {
				t.Errorf("cursor %q, want %q", e.cursor, cur)
			}
			if !reflect.DeepEqual(e.messages, tc.msgs) {
				t.Errorf("messages %q, want %q", e.messages, tc.msgs)
			}
		})
	}
}

func TestJournalRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		matches []string
		cursor  string
		want    string
	}{
		{"a bare word", []string{"sshd"}, "", "match 1: \"sshd\" is not FIELD=VALUE"},
		{"an option", []string{"SYSLOG_IDENTIFIER=sshd", "--file=/etc/shadow"}, "", "match 2: \"--file=/etc/shadow\": \"--file\" is not a journal field name"},
		{"lower case", []string{"syslog_identifier=sshd"}, "", "is not a journal field name"},
		{"a leading digit", []string{"1X=y"}, "", "is not a journal field name"},
		{"a path", []string{"/usr/sbin/sshd"}, "", "is not FIELD=VALUE"},
		{"a garbled cursor", nil, "garbage", "saved cursor \"garbage\""},
		{"a short ID", nil, "s=1;i=1", "not a 128-bit ID"},
		{"not hex", nil, "t=zz", "not a hexadecimal number"},
		{"no place", nil, "s=" + strings.Repeat("a", 32), "places no entry"},
		{"an empty item", nil, fakeCursor(1) + ";", "is not k=v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A journalctl that must not be run.
			j := &Journal{Path: "/nonexistent/journalctl", Matches: tc.matches, Logger: slog.New(slog.DiscardHandler)}
			err := j.Run(context.Background(), tc.cursor, func(string, string) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v; want an error saying %q", err, tc.want)
			}
		})
	}
	for _, m := range []string{"+", "_SYSTEMD_UNIT=ssh.service", "SYSLOG_IDENTIFIER=sshd", "MESSAGE=a=b c", "PRIORITY="} {
		if err := checkJournalMatch(m); err != nil {
			t.Errorf("match %q refused: %v", m, err)
		}
	}
	for _, c := range []string{
		fakeCursor(1),
		"s=5e737d67692742cd89f229d18ce626de;i=4;b=0123456789abcdef0123456789abcdef;m=4;t=660c8aba9b2bd;x=5ca49080fdae38aa",
		"t=660c8aba9b2bd",
	} {
		if err := checkJournalCursor(c); err != nil {
			t.Errorf("cursor %q refused: %v", c, err)
		}
	}
}

func TestJournalAvailable(t *testing.T) {
	fake := newFakeJournalctl(t)
	_, serr := os.Stat(journaldSocket)
	for _, tc := range []struct {
		name string
		j    Journal
		want string // "" when available
	}{
		{"no journalctl", Journal{Path: filepath.Join(t.TempDir(), "journalctl")}, "is not installed"},
		{"no journalctl in PATH", Journal{Path: "moat-no-such-journalctl"}, "moat-no-such-journalctl is not installed"},
		{"files need no journald", Journal{Path: fake.path, Files: []string{"/x.journal"}}, ""},
		{"a directory needs no journald", Journal{Path: fake.path, Directory: "/x"}, ""},
		{"the system journal needs journald", Journal{Path: fake.path}, map[bool]string{
			true:  "journald is not running here (no /run/systemd/journal/socket)",
			false: "",
		}[serr != nil]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.j.Available()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Available: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Available: %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

// fakeCursor is a cursor as journalctl writes them, numbered.
func fakeCursor(i int) string {
	return fmt.Sprintf("s=%032x;i=%x;b=%032x;m=%x;t=%x;x=%x", 0x5e737d, i, 0x0123, i, 1795264806940950+i, i)
}

// fakeEntry is a line of journalctl --output=json: message is a string,
// []int (bytes) or nil (null); with no message the entry has none.
func fakeEntry(i int, message ...any) string {
	e := map[string]any{"__CURSOR": fakeCursor(i), "SYSLOG_IDENTIFIER": "sshd", "__REALTIME_TIMESTAMP": strconv.Itoa(i)}
	if len(message) > 0 {
		e["MESSAGE"] = message[0]
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// fakeJournalctl is a stand-in for journalctl: a shell script that
// records its arguments and, on its nth start with --follow, writes
// out.n and err.n, then exits with the status in exit.n, or waits as
// journalctl --follow does when there is none. Without --follow (Run
// looking for the journal's end) it writes the file "probe".
type fakeJournalctl struct {
	t         *testing.T
	dir, path string
}

const fakeJournalctlScript = `#!/bin/sh
dir='%s'
echo "$*" >> "$dir/args"
case " $* " in
*" --follow "*) ;;
*) if [ -f "$dir/probe" ]; then cat "$dir/probe"; fi; exit 0 ;;
esac
n=$(cat "$dir/runs" 2>/dev/null || echo 0)
n=$((n+1))
echo "$n" > "$dir/runs"
echo "$$" >> "$dir/pids"
if [ -f "$dir/out.$n" ]; then cat "$dir/out.$n"; fi
if [ -f "$dir/err.$n" ]; then cat "$dir/err.$n" >&2; fi
if [ -f "$dir/exit.$n" ]; then exit "$(cat "$dir/exit.$n")"; fi
exec sleep 60
`

func newFakeJournalctl(t *testing.T) *fakeJournalctl {
	dir := t.TempDir()
	f := &fakeJournalctl{t: t, dir: dir, path: filepath.Join(dir, "journalctl")}
	if err := os.WriteFile(f.path, fmt.Appendf(nil, fakeJournalctlScript, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeJournalctl) write(name, content string) {
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// start sets what the nth start with --follow writes and does: exit
// with status exit, or wait when exit < 0.
func (f *fakeJournalctl) start(n int, lines []string, stderr string, exit int) {
	if len(lines) > 0 {
		f.write(fmt.Sprintf("out.%d", n), strings.Join(lines, "\n")+"\n")
	}
	if stderr != "" {
		f.write(fmt.Sprintf("err.%d", n), stderr)
	}
	if exit >= 0 {
		f.write(fmt.Sprintf("exit.%d", n), strconv.Itoa(exit))
	}
}

// lines returns the lines of a file the script writes.
func (f *fakeJournalctl) lines(name string) []string {
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// args returns the arguments of each start, in order.
func (f *fakeJournalctl) args() []string { return f.lines("args") }

func (f *fakeJournalctl) pids() []int {
	var pids []int
	for _, l := range f.lines("pids") {
		pid, err := strconv.Atoi(l)
		if err != nil {
			f.t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitStarts waits until the script was started with --follow n times.
func (f *fakeJournalctl) waitStarts(n int) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.lines("pids")) < n {
		if time.Now().After(deadline) {
			f.t.Fatalf("journalctl was started %d times, want %d; its arguments:\n%s", len(f.lines("pids")), n, strings.Join(f.args(), "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkJournalctlArgs(t *testing.T, args string, want, notWant []string) {
	t.Helper()
	have := map[string]bool{}
	for _, a := range strings.Fields(args) {
		have[a] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("journalctl %s: no %s", args, w)
		}
	}
	for _, w := range notWant {
		if have[w] {
			t.Errorf("journalctl %s: %s, unwanted", args, w)
		}
	}
}

func TestJournalRunFake(t *testing.T) {
	matches := []string{"SYSLOG_IDENTIFIER=sshd", "+", "_SYSTEMD_UNIT=ssh.service"}
	newJournal := func(f *fakeJournalctl, log *logRecorder) *Journal {
		return &Journal{Path: f.path, Matches: matches, Backoff: 10 * time.Millisecond, Logger: slog.New(log)}
	}

	t.Run("resumes after its cursor, and after the last entry when journalctl exits", func(t *testing.T) {
		f := newFakeJournalctl(t)
		f.start(1, []string{fakeEntry(2, "m2"), fakeEntry(3, "m3"), fakeEntry(4)}, "journalctl: boom\n", 1)
		f.start(2, []string{fakeEntry(5, "m5")}, "", -1)
		log := &logRecorder{}
		c := &journalCollector{}
		_, stop := runJournal(newJournal(f, log), fakeCursor(1), c)
		got := c.wait(t, 3)
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v, want context.Canceled", err)
		}
		if want := []string{"m2", "m3", "m5"}; !reflect.DeepEqual(got, want) {
			t.Errorf("messages %q, want %q", got, want)
		}
		if want := []string{fakeCursor(2), fakeCursor(3), fakeCursor(5)}; !reflect.DeepEqual(c.cursors, want) {
			t.Errorf("cursors %q, want %q", c.cursors, want)
		}
		args := f.args()
		if len(args) != 2 {
			t.Fatalf("journalctl started %d times, want 2 (no look for the end: there is a cursor):\n%s", len(args), strings.Join(args, "\n"))
		}
		common := []string{"--follow", "--output=json", "--output-fields=MESSAGE", "--no-pager"}
		checkJournalctlArgs(t, args[0], append(common, "--after-cursor="+fakeCursor(1)), []string{"--lines=all"})
		// Entry 4 has no MESSAGE, and was read all the same.
		checkJournalctlArgs(t, args[1], append(common, "--after-cursor="+fakeCursor(4)), nil)
		for _, a := range args {
			if !strings.HasSuffix(a, " -- "+strings.Join(matches, " ")) {
				t.Errorf("journalctl %s: the matches are not last, after --", a)
			}
		}
		if w := log.records("journal: journalctl stopped"); len(w) != 1 || !strings.Contains(w[0], "exit status 1: journalctl: boom") {
			t.Errorf("the log says of journalctl's exit %q; want its status and its stderr", w)
		}
		checkJournalctlGone(t, f.pids())
	})

	t.Run("starts at the end without a cursor", func(t *testing.T) {
		f := newFakeJournalctl(t)
		f.write("probe", fakeEntry(7, "old")+"\n")
		f.start(1, []string{fakeEntry(8, "new")}, "", -1)
		c := &journalCollector{}
		_, stop := runJournal(newJournal(f, &logRecorder{}), "", c)
		got := c.wait(t, 1)
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if want := []string{"new"}; !reflect.DeepEqual(got, want) {
			t.Errorf("messages %q, want %q", got, want)
		}
		args := f.args()
		if len(args) != 2 {
			t.Fatalf("journalctl started %d times, want 2:\n%s", len(args), strings.Join(args, "\n"))
		}
		checkJournalctlArgs(t, args[0], []string{"--lines=1", "--output=json", "--", "SYSLOG_IDENTIFIER=sshd"}, []string{"--follow"})
		checkJournalctlArgs(t, args[1], []string{"--follow", "--after-cursor=" + fakeCursor(7)}, []string{"--lines=all"})
		checkJournalctlGone(t, f.pids())
	})

	t.Run("reads from the head when nothing matched when it began", func(t *testing.T) {
		f := newFakeJournalctl(t)
		f.start(1, nil, "", 0) // exits before the first entry, and with status 0
		f.start(2, []string{fakeEntry(1, "a")}, "", 1)
		f.start(3, []string{fakeEntry(2, "b")}, "", -1)
		log := &logRecorder{}
		c := &journalCollector{}
		_, stop := runJournal(newJournal(f, log), "", c)
		got := c.wait(t, 2)
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if want := []string{"a", "b"}; !reflect.DeepEqual(got, want) {
			t.Errorf("messages %q, want %q", got, want)
		}
		args := f.args()
		if len(args) != 4 {
			t.Fatalf("journalctl started %d times, want 4 (once to find the end):\n%s", len(args), strings.Join(args, "\n"))
		}
		checkJournalctlArgs(t, args[0], []string{"--lines=1"}, []string{"--follow"})
		// Still nothing read: from the head again, not from the end.
		checkJournalctlArgs(t, args[1], []string{"--follow", "--lines=all"}, []string{"--lines=1"})
		checkJournalctlArgs(t, args[2], []string{"--follow", "--lines=all"}, []string{"--lines=1"})
		checkJournalctlArgs(t, args[3], []string{"--follow", "--after-cursor=" + fakeCursor(1)}, []string{"--lines=all"})
		if w := log.records("journal: journalctl stopped"); len(w) != 2 || !strings.Contains(w[0], "journalctl exited") {
			t.Errorf("the log says of journalctl's exits %q", w)
		}
		checkJournalctlGone(t, f.pids())
	})

	t.Run("skips what is too long or not an entry", func(t *testing.T) {
		f := newFakeJournalctl(t)
		huge := fakeEntry(2, strings.Repeat("x", 100<<10))
		f.start(1, []string{fakeEntry(1, "a"), huge, fakeEntry(3, "b"), "not JSON", huge, huge, fakeEntry(6, "c")}, "", -1)
		log := &logRecorder{}
		j := newJournal(f, log)
		j.MaxLine = 1 << 10
		c := &journalCollector{}
		_, stop := runJournal(j, fakeCursor(0), c)
		got := c.wait(t, 3)
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if want := []string{"a", "b", "c"}; !reflect.DeepEqual(got, want) {
			t.Errorf("messages %q, want %q", got, want)
		}
		if w := log.records("journal: skipping an entry longer than the limit"); len(w) != 3 || !strings.Contains(w[0], fmt.Sprintf("bytes=%d limit=1024", len(huge)+1)) {
			t.Errorf("the log says of the long lines %q", w)
		}
		if w := log.records("journal: skipping what journalctl wrote"); len(w) != 1 || !strings.Contains(w[0], "line=not JSON") {
			t.Errorf("the log says of the line that is not an entry %q", w)
		}
	})

	t.Run("stops journalctl when emit fails", func(t *testing.T) {
		f := newFakeJournalctl(t)
		f.start(1, []string{fakeEntry(1, "a"), fakeEntry(2, "b"), fakeEntry(3, "c")}, "", -1)
		c := &journalCollector{stop: 2}
		done, _ := runJournal(newJournal(f, &logRecorder{}), fakeCursor(0), c)
		select {
		case err := <-done:
			if err != errStopped {
				t.Errorf("Run: %v, want emit's error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run went on after emit failed")
		}
		if want := []string{"a", "b"}; !reflect.DeepEqual(c.msgs, want) {
			t.Errorf("messages %q, want %q", c.msgs, want)
		}
		checkJournalctlGone(t, f.pids())
	})

	t.Run("waits longer each time journalctl fails at once", func(t *testing.T) {
		f := newFakeJournalctl(t)
		for n := 1; n <= 4; n++ {
			f.start(n, nil, "Failed to open files\n", 1)
		}
		log := &logRecorder{}
		_, stop := runJournal(newJournal(f, log), fakeCursor(0), &journalCollector{})
		f.waitStarts(5)
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		w := log.records("journal: journalctl stopped")
		if len(w) < 4 {
			t.Fatalf("the log says of journalctl's exits %q", w)
		}
		for i, want := range []string{"in=10ms", "in=20ms", "in=40ms", "in=80ms"} {
			if !strings.Contains(w[i], want) || !strings.Contains(w[i], "Failed to open files") {
				t.Errorf("exit %d logged as %q; want %s and journalctl's stderr", i+1, w[i], want)
			}
		}
		checkJournalctlGone(t, f.pids())
	})
}

// journalRemote finds systemd-journal-remote, which writes journal files
// from journald's export format without journald.
func journalRemote(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("guard: this test needs systemd-journal-remote, to write a journal file without journald (Debian package systemd-journal-remote; installing it starts and enables nothing); make test installs it")
	return ""
}

// journalFile is a journal file that a test writes entries to as journald
// would, through systemd-journal-remote.
type journalFile struct {
	t      *testing.T
	remote string // systemd-journal-remote
	path   string
	mono   int
}

// field is one field of an entry.
type journalField struct{ name, value string }

// sshdEntry is an entry as journald stores a line of sshd's.
func sshdJournalEntry(msg string) []journalField {
	return []journalField{{"MESSAGE", msg}, {"SYSLOG_IDENTIFIER", "sshd"}, {"_SYSTEMD_UNIT", "ssh.service"}, {"_PID", "4242"}, {"PRIORITY", "6"}}
}

// append writes entries at the end of the file, in journald's export
// format (https://systemd.io/JOURNAL_EXPORT_FORMATS/) on
// systemd-journal-remote's stdin.
func (w *journalFile) append(entries ...[]journalField) {
	w.t.Helper()
	var b bytes.Buffer
	for _, e := range entries {
		w.mono++
		fmt.Fprintf(&b, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=moat-test\n",
			time.Now().UnixMicro(), w.mono)
		for _, f := range e {
			if strings.Contains(f.value, "\n") || !utf8.ValidString(f.value) {
				b.WriteString(f.name + "\n")
				binary.Write(&b, binary.LittleEndian, uint64(len(f.value)))
				b.WriteString(f.value + "\n")
			} else {
				b.WriteString(f.name + "=" + f.value + "\n")
			}
		}
		b.WriteString("\n")
	}
	cmd := exec.Command(w.remote, "--output="+w.path, "-")
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("%s: %v\n%s", w.remote, err, out)
	}
}

// sshdFailures are entries of sshd's failures from the ports from..to.
func sshdJournalEntries(from, to int) [][]journalField {
	var es [][]journalField
	for p := from; p <= to; p++ {
		es = append(es, sshdJournalEntry(sshdFailure("root", p)))
	}
	return es
}

// TestJournalFile runs the real journalctl over a journal file that
// systemd-journal-remote writes: no journald is needed.
func TestJournalFile(t *testing.T) {
	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip("guard: this test needs journalctl (Debian package systemd)")
	}
	dir := t.TempDir()
	w := &journalFile{t: t, remote: journalRemote(t), path: filepath.Join(dir, "sshd.journal")}

	// journalctl, through a script that records which one runs, to be killed.
	wrapper := filepath.Join(dir, "journalctl")
	script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *\" --follow \"*) echo \"$$\" >> '%[1]s/pids'; echo \"$*\" >> '%[1]s/args';; esac\nexec '%[2]s' \"$@\"\n", dir, journalctl)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	fj := &fakeJournalctl{t: t, dir: dir, path: wrapper} // for its pids and args

	log := &logRecorder{}
	j := &Journal{
		Path:    wrapper,
		Matches: []string{"_SYSTEMD_UNIT=ssh.service", "+", "SYSLOG_IDENTIFIER=sshd"},
		Files:   []string{w.path},
		Backoff: 10 * time.Millisecond,
		Logger:  slog.New(log),
	}

	// Old history: not handed on by a first start.
	w.append(sshdJournalEntries(1, 5)...)

	c1 := &journalCollector{stop: 8}
	done, _ := runJournal(j, "", c1)
	log.wait(t, "journal: following", 1)
	w.append(sshdJournalEntries(6, 6)...)
	w.append(
		// Matched by SYSLOG_IDENTIFIER alone, by the unit alone (the matches' "+").
		[]journalField{{"MESSAGE", sshdFailure("root", 7)}, {"SYSLOG_IDENTIFIER", "sshd"}},
		[]journalField{{"MESSAGE", sshdFailure("root", 8)}, {"_SYSTEMD_UNIT", "ssh.service"}},
		// Another program's: not matched.
		[]journalField{{"MESSAGE", sshdFailure("root", 999)}, {"SYSLOG_IDENTIFIER", "cron"}, {"_SYSTEMD_UNIT", "cron.service"}},
		// No MESSAGE; one longer than 4096 bytes, which journalctl writes as null.
		[]journalField{{"SYSLOG_IDENTIFIER", "sshd"}, {"_SYSTEMD_UNIT", "ssh.service"}},
		sshdJournalEntry(sshdFailure(strings.Repeat("a", 5000), 998)),
		// Not UTF-8: journalctl writes it as an array of bytes.
		sshdJournalEntry(sshdFailure("r\xffot", 9)),
		sshdJournalEntry(sshdFailure("root", 10)),
	)
	c1.wait(t, 5)
	w.append(sshdJournalEntries(11, 15)...)
	// moat stops at 13: 14 was not dealt with.
	select {
	case err := <-done:
		if err != errStopped {
			t.Fatalf("Run: %v, want emit's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run went on after emit failed")
	}
	checkSequence(t, failurePorts(t, c1.msgs), 6, 13)
	if want := sshdFailure("r\xffot", 9); !slices.Contains(c1.msgs, want) {
		t.Errorf("the message that is not UTF-8 did not come as it was, %q; came %q", want, c1.msgs)
	}

	// While moat is down, more entries; then it resumes from its cursor.
	w.append(sshdJournalEntries(16, 20)...)
	c2 := &journalCollector{}
	_, stop := runJournal(j, c1.cursor(), c2)
	checkSequence(t, failurePorts(t, c2.wait(t, 7)), 14, 20)
	saved := c2.cursor()

	// journalctl dies; entries come while it is gone.
	fj.waitStarts(2)
	pids := fj.pids()
	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	w.append(sshdJournalEntries(21, 25)...)
	got := c2.wait(t, 12)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	checkSequence(t, failurePorts(t, got), 14, 25)
	if r := log.records("journal: journalctl stopped"); len(r) != 1 || !strings.Contains(r[0], "signal: killed") {
		t.Errorf("the log says of journalctl's death %q", r)
	}
	if args := fj.args(); len(args) != 3 {
		t.Errorf("journalctl started %d times with --follow, want 3:\n%s", len(args), strings.Join(args, "\n"))
	} else {
		checkJournalctlArgs(t, args[1], []string{"--after-cursor=" + c1.cursor(), "--file=" + w.path}, nil)
		checkJournalctlArgs(t, args[2], []string{"--after-cursor=" + saved, "--file=" + w.path}, nil)
	}
	checkJournalctlGone(t, fj.pids())
}

// TestJournalLive follows the system journal, where journald runs.
func TestJournalLive(t *testing.T) {
	id := fmt.Sprintf("moat-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	log := &logRecorder{}
	j := &Journal{Matches: []string{"SYSLOG_IDENTIFIER=" + id}, Backoff: 10 * time.Millisecond, Logger: slog.New(log)}
	if err := j.Available(); err != nil {
		t.Skipf("SKIPPED: the test of the live journal needs journald: %v", err)
	}
	// send logs as a program does that writes to journald natively.
	send := func(port int) {
		t.Helper()
		conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: journaldSocket, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "SYSLOG_IDENTIFIER=%s\nPRIORITY=6\nMESSAGE=%s\n", id, sshdFailure("root", port)); err != nil {
			t.Fatal(err)
		}
	}

	// Old history, once journalctl shows it.
	send(1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("journalctl", "--lines=1", "--output=json", "--no-pager", "SYSLOG_IDENTIFIER="+id).Output()
		if err != nil {
			t.Fatalf("journalctl: %v", err)
		}
		if len(bytes.TrimSpace(out)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Skip("SKIPPED: journald took the test's entry, but journalctl does not show it to this user: run as root, or as a member of the group systemd-journal")
		}
		time.Sleep(50 * time.Millisecond)
	}

	c1 := &journalCollector{stop: 2}
	done, _ := runJournal(j, "", c1)
	log.wait(t, "journal: following", 1)
	for p := 2; p <= 4; p++ {
		send(p)
	}
	select {
	case err := <-done:
		if err != errStopped {
			t.Fatalf("Run: %v, want emit's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run handed on fewer than 3 entries in 10 s")
	}
	checkSequence(t, failurePorts(t, c1.msgs), 2, 3)

	send(5)
	c2 := &journalCollector{}
	_, stop := runJournal(j, c1.cursor(), c2)
	got := c2.wait(t, 2)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
	checkSequence(t, failurePorts(t, got), 4, 5)
}

// TestJournalJail: the sshd jail reads the journal through the warden:
// old history bans nobody, and failures written right after Configure
// returns (the start found before it does) lead to a ban.
func TestJournalJail(t *testing.T) {
	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip("guard: this test needs journalctl (Debian package systemd)")
	}
	dir := t.TempDir()
	w := &journalFile{t: t, remote: journalRemote(t), path: filepath.Join(dir, "sshd.journal")}
	w.append(sshdJournalEntries(1, 5)...) // history
	wt := newWardenTest(t)
	src := JournalSource{&Journal{Path: journalctl, Matches: []string{"SYSLOG_IDENTIFIER=sshd"}, Files: []string{w.path}, Backoff: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}}
	spec := JailSpec{Name: "sshd", Policy: Policy{MaxRetry: 3, FindTime: time.Hour, BanTime: time.Hour, MaxBanTime: time.Hour}, Filter: SSHD{}, Source: src}
	wt.w.Configure(context.Background(), []JailSpec{spec}, nil)
	w.append(sshdJournalEntries(6, 8)...)
	deadline := time.Now().Add(10 * time.Second)
	for len(wt.w.List()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no ban 10s after 3 failures; lines read: %d", wt.w.Stats().Lines["sshd"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b := wt.w.List()[0]; len(b.Evidence) != 3 || wt.w.Stats().Lines["sshd"] != 3 {
		t.Errorf("ban %+v after %d lines: want the 3 new failures only", b, wt.w.Stats().Lines["sshd"])
	}
}
