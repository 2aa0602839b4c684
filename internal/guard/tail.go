package guard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// Position is how far a log file has been read: which file (its inode)
// and the offset after the last whole line handed on. Saved after each
// line is dealt with, it lets a restart resume without losing or
// repeating a line.
type Position struct {
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// Tail follows a log file as tail -F does: through rotation by rename
// (logrotate's default: the file moves to path.1 and a new one appears)
// and by copytruncate (the file is copied to path.1 and emptied), and
// waiting for a file that does not exist yet.
type Tail struct {
	Path string
	// Poll is how often a quiet file is looked at again; 250 ms by
	// default.
	Poll time.Duration
}

// rotated is where logrotate leaves the previous file.
func (t *Tail) rotated() string { return t.Path + ".1" }

// Run reads lines from start on, calling emit with each whole line and
// the position after it, until ctx ends or emit fails. When start names a
// file that has since been rotated away, the rest of that file (found at
// path.1) comes first.
func (t *Tail) Run(ctx context.Context, start Position, emit func(line string, pos Position) error) error {
	poll := t.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	r := &reader{emit: emit}
	if start.Inode != 0 {
		if ino, _, err := stat(t.Path); err == nil && ino != start.Inode {
			// Rotated while we were away: finish the old file first.
			if oino, _, err := stat(t.rotated()); err == nil && oino == start.Inode {
				if err := r.drainFile(t.rotated(), start); err != nil {
					return err
				}
			}
			start = Position{}
		}
	}
	for {
		f, ino, err := t.open(ctx, poll)
		if err != nil {
			return err
		}
		off := int64(0)
		if ino == start.Inode {
			off = start.Offset
		}
		start = Position{}
		err = r.follow(ctx, f, ino, off, t, poll)
		f.Close()
		if err != nil {
			return err
		}
	}
}

// open waits for the file to exist and opens it.
func (t *Tail) open(ctx context.Context, poll time.Duration) (*os.File, uint64, error) {
	for {
		f, err := os.Open(t.Path)
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, 0, err
			}
			return f, inode(fi), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("guard: %w", err)
		}
		if err := sleep(ctx, poll); err != nil {
			return nil, 0, err
		}
	}
}

// reader cuts a stream into lines, keeping a partial last line until its
// end is written.
type reader struct {
	emit    func(string, Position) error
	partial []byte
	buf     [32 << 10]byte
}

// follow reads f from off until the file at t.Path is another one (a
// rename) and f is read to its end; it returns nil then, for the caller
// to open the new file.
func (r *reader) follow(ctx context.Context, f *os.File, ino uint64, off int64, t *Tail, poll time.Duration) error {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("guard: %s: %w", t.Path, err)
	}
	r.partial = r.partial[:0]
	pos := off // offset after the last whole line
	for {
		n, err := f.Read(r.buf[:])
		if n > 0 {
			if pos, err = r.lines(r.buf[:n], ino, pos); err != nil {
				return err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("guard: %s: %w", t.Path, err)
		}
		// At the end: has the file been rotated or truncated?
		cur, size, serr := stat(t.Path)
		switch {
		case serr == nil && cur != ino:
			return nil // renamed away, and f read to its end: the new file next
		case serr == nil && size < pos+int64(len(r.partial)):
			// Truncated (copytruncate): what came after pos before the
			// truncation is at the end of the copy.
			if oino, osize, err := stat(t.rotated()); err == nil && oino != ino && osize > pos {
				if err := r.drainFile(t.rotated(), Position{Inode: ino, Offset: pos}); err != nil {
					return err
				}
			}
			r.partial = r.partial[:0]
			pos = 0
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("guard: %s: %w", t.Path, err)
			}
			continue
		}
		if err := sleep(ctx, poll); err != nil {
			return err
		}
	}
}

// drainFile hands on the whole lines of the file at path from p.Offset to
// its end, with positions in p's file (a rotated file is the same lines,
// so a restart finds its place).
func (r *reader) drainFile(path string, p Position) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(p.Offset, io.SeekStart); err != nil {
		return fmt.Errorf("guard: %s: %w", path, err)
	}
	saved := r.partial
	r.partial = nil
	pos := p.Offset
	for {
		n, err := f.Read(r.buf[:])
		if n > 0 {
			if pos, err = r.lines(r.buf[:n], p.Inode, pos); err != nil {
				return err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("guard: %s: %w", path, err)
		}
	}
	if len(r.partial) > 0 { // a last line without its newline: it is whole
		line := string(r.partial)
		pos += int64(len(r.partial))
		r.partial = saved[:0]
		return r.emit(line, Position{Inode: p.Inode, Offset: pos})
	}
	r.partial = saved[:0]
	return nil
}

// lines emits the whole lines of b (after what was partial) and keeps the
// rest; it returns the offset after the last whole line.
func (r *reader) lines(b []byte, ino uint64, pos int64) (int64, error) {
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			r.partial = append(r.partial, b...)
			return pos, nil
		}
		var line string
		if len(r.partial) > 0 {
			line = string(append(r.partial, b[:i]...))
			pos += int64(len(r.partial))
			r.partial = r.partial[:0]
		} else {
			line = string(b[:i])
		}
		pos += int64(i + 1)
		b = b[i+1:]
		if err := r.emit(line, Position{Inode: ino, Offset: pos}); err != nil {
			return pos, err
		}
	}
}

func stat(path string) (uint64, int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	return inode(fi), fi.Size(), nil
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
