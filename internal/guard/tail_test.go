package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// logWriter appends numbered lines to a log file, as a syslog daemon does
// (O_APPEND), and rotates it the two ways logrotate does.
type logWriter struct {
	t    *testing.T
	path string
	mu   sync.Mutex
	f    *os.File
	next int
}

func newLogWriter(t *testing.T, path string) *logWriter {
	w := &logWriter{t: t, path: path, next: 1}
	w.reopen()
	t.Cleanup(func() { w.f.Close() })
	return w
}

func (w *logWriter) reopen() {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f = f
}

// write appends n lines, the last one possibly in two writes (a line
// caught half written).
func (w *logWriter) write(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for range n {
		line := fmt.Sprintf("Failed password for root from 203.0.113.7 port %d ssh2\n", w.next)
		half := len(line) / 2
		if w.next%7 == 0 {
			io.WriteString(w.f, line[:half])
			time.Sleep(time.Millisecond)
			io.WriteString(w.f, line[half:])
		} else {
			io.WriteString(w.f, line)
		}
		w.next++
	}
}

func (w *logWriter) renameRotate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		w.t.Fatal(err)
	}
	w.f.Close()
	w.reopen()
}

func (w *logWriter) copyTruncate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(w.path+".1", data, 0o600); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Truncate(w.path, 0); err != nil {
		w.t.Fatal(err)
	}
}

// collector gathers the port numbers of the lines a tail hands on.
type collector struct {
	mu   sync.Mutex
	got  []int
	pos  Position
	stop int // refuse lines after this many, as a stopping moat would; 0 never
}

func (c *collector) emit(line string, pos Position) error {
	a, ok := SSHD{}.Match(line)
	if !ok {
		return fmt.Errorf("not a failure line: %q", line)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop > 0 && len(c.got) == c.stop {
		return errStopped // moat stops: this line was not dealt with
	}
	c.got = append(c.got, int(a.Port))
	c.pos = pos
	return nil
}

var errStopped = errors.New("stopped")

func (c *collector) wait(t *testing.T, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := append([]int(nil), c.got...)
		c.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkSequence(t *testing.T, got []int, from, to int) {
	t.Helper()
	count := map[int]int{}
	for _, g := range got {
		count[g]++
	}
	var missing, twice []int
	for i := from; i <= to; i++ {
		switch count[i] {
		case 0:
			missing = append(missing, i)
		case 1:
		default:
			twice = append(twice, i)
		}
	}
	if len(missing) > 0 || len(twice) > 0 || len(got) != to-from+1 {
		t.Errorf("lines %d..%d: %d handed on; missing %v; more than once %v", from, to, len(got), missing, twice)
		return
	}
	for i, g := range got {
		if g != from+i {
			t.Errorf("line %d handed on in position %d: out of order", g, i)
			return
		}
	}
}

func TestTailRotation(t *testing.T) {
	for _, rotate := range []string{"rename", "copytruncate"} {
		t.Run(rotate, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "auth.log")
			tl := &Tail{Path: path, Poll: 5 * time.Millisecond}
			c := &collector{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tl.Run(ctx, Position{}, c.emit) }()
			time.Sleep(20 * time.Millisecond) // the file does not exist yet
			w := newLogWriter(t, path)
			w.write(1)
			c.wait(t, 1) // the tail has found the file
			for round := range 6 {
				w.write(40)
				if round%2 == 1 {
					time.Sleep(time.Duration(round) * 3 * time.Millisecond) // sometimes the tail has caught up, sometimes not
				}
				if rotate == "rename" {
					w.renameRotate()
				} else {
					w.copyTruncate()
				}
				// The rotation came with lines unread. The next one comes
				// once the tail has read the new file too, as logrotate's
				// come a day apart: two rotations within one poll would
				// leave a file the tail never saw (tail -F misses it too).
				w.write(1)
				c.wait(t, w.next-1)
			}
			w.write(40)
			got := c.wait(t, 287)
			cancel()
			<-done
			checkSequence(t, got, 1, 287)
		})
	}
}

func TestTailResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	w := newLogWriter(t, path)
	w.write(50)
	tl := &Tail{Path: path, Poll: 5 * time.Millisecond}

	// The first run stops after 30 lines, as moat being stopped would.
	c := &collector{stop: 30}
	if err := tl.Run(context.Background(), Position{}, c.emit); err != errStopped {
		t.Fatalf("Run: %v", err)
	}
	checkSequence(t, c.got, 1, 30)

	// While moat is down: more lines, a rotation, more lines.
	w.write(10)
	w.renameRotate()
	w.write(15)

	ctx2, cancel2 := context.WithCancel(context.Background())
	c2 := &collector{}
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx2, c.pos, c2.emit) }()
	got := c2.wait(t, 45)
	cancel2()
	<-done
	checkSequence(t, got, 31, 75)
}
