package guard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// journaldSocket is where journald listens while it runs; its absence
// means nothing new reaches the journal.
const journaldSocket = "/run/systemd/journal/socket"

// Defaults of the Journal's knobs.
const (
	defaultJournalBackoff = time.Second
	maxJournalBackoff     = time.Minute
	defaultJournalMaxLine = 64 << 10
	// journalStopWait is how long journalctl has to exit after SIGTERM
	// before it is killed.
	journalStopWait = 2 * time.Second
	// journalStderr is how much of journalctl's stderr is kept for the
	// error that reports its exit.
	journalStderr = 1 << 10
)

// Journal follows the systemd journal, for systems where sshd logs only
// there (no auth.log). It runs journalctl (no cgo, no libsystemd) with
// JSON output, which carries each entry's cursor: saved after each message
// is dealt with, the cursor lets a restart resume without losing or
// repeating an entry, as a Position does for a Tail.
//
// For sshd, match what it logs as, under either unit name
// ("ssh.service" on Debian and Ubuntu, "sshd.service" elsewhere):
//
//	Matches: []string{"SYSLOG_IDENTIFIER=sshd", "SYSLOG_IDENTIFIER=sshd-session"}
//
// journalctl needs version 236 or later (--output-fields), and reads the
// whole system journal only as root or as a member of the
// systemd-journal or adm group: anyone else sees only his own entries.
type Journal struct {
	// Path is the journalctl binary; "journalctl", looked up in PATH,
	// when empty.
	Path string
	// Matches select the entries, as journalctl's arguments do:
	// "FIELD=VALUE" terms, of which those of one field are ORed and those
	// of different fields ANDed, and "+" between two groups of terms ORs
	// the groups. None selects every entry.
	Matches []string
	// Files are journal files (or globs) to read instead of the system
	// journal (journalctl --file), and Directory a directory of them
	// (--directory): for a journal kept elsewhere, and for tests.
	Files     []string
	Directory string
	// Backoff is the wait before journalctl is started again after it
	// exited: 1 s by default, doubled for each exit in a row that came
	// with no entry read, up to a minute.
	Backoff time.Duration
	// MaxLine bounds one entry as journalctl writes it (JSON) in bytes;
	// a longer one is skipped with a warning. 64 KiB by default, far more
	// than an entry needs: journalctl itself writes a field of more than
	// 4096 bytes as null.
	MaxLine int
	// Logger is told of restarts and skipped entries; slog.Default()
	// when nil.
	Logger *slog.Logger
}

// Available reports why the journal cannot be followed here, or nil: the
// journalctl binary is missing, or (for the system journal) journald is
// not running, so nothing new would reach the journal.
func (j *Journal) Available() error {
	if _, err := exec.LookPath(j.path()); err != nil {
		return fmt.Errorf("guard: journal: %s is not installed (Debian package systemd): %w", j.path(), err)
	}
	if len(j.Files) > 0 || j.Directory != "" {
		return nil
	}
	fi, err := os.Stat(journaldSocket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("guard: journal: journald is not running here (no %s): sshd's messages go to syslog or nowhere; follow its log file instead", journaldSocket)
	case err != nil:
		return fmt.Errorf("guard: journal: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("guard: journal: journald is not running here (%s is not a socket)", journaldSocket)
	}
	return nil
}

// Run hands on the MESSAGE of each entry that matches, with the entry's
// cursor, until ctx ends or emit fails; it returns ctx's error or emit's.
// It returns at once a match or a cursor that journalctl would refuse,
// and a journalctl that is not there.
//
// With a cursor, Run starts after that entry. Without one it starts at
// the end: entries written before Run began are not handed on, so that a
// first start does not ban for old history. (Run then resumes from the
// last matching entry as it was when Run began, and so loses nothing if
// journalctl must be started again before a new entry came.)
//
// A MESSAGE that is not valid UTF-8 is handed on as its bytes. An entry
// without a MESSAGE, or with one journalctl writes as null (longer than
// 4096 bytes), is passed over; one with several MESSAGE values (which
// only a program writing to journald natively can make) hands each on,
// with the same cursor.
//
// When journalctl exits, Run logs why and starts it again after Backoff,
// after the last entry read. When ctx ends or emit fails, journalctl is
// stopped and waited for before Run returns.
func (j *Journal) Run(ctx context.Context, cursor string, emit func(msg, cursor string) error) error {
	for i, m := range j.Matches {
		if err := checkJournalMatch(m); err != nil {
			return fmt.Errorf("guard: journal: match %d: %w", i+1, err)
		}
	}
	if cursor != "" {
		if err := checkJournalCursor(cursor); err != nil {
			return fmt.Errorf("guard: journal: saved cursor %q: %w", cursor, err)
		}
	}
	if _, err := exec.LookPath(j.path()); err != nil {
		return fmt.Errorf("guard: journal: %w", err)
	}
	log := j.logger()
	first := j.Backoff
	if first <= 0 {
		first = defaultJournalBackoff
	}
	st := journalState{after: cursor}
	wait := first
	for {
		read, err := j.follow(ctx, &st, emit)
		var ee emitError
		if errors.As(err, &ee) {
			return ee.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if read {
			wait = first
		}
		log.Warn("journal: journalctl stopped; starting it again", "err", err, "in", wait, "after", st.after)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, max(maxJournalBackoff, first))
	}
}

// journalState is where a Run is: after is the cursor of the last entry
// read (or the one it started after); fromHead says there is none, and
// the journal had no matching entry when Run began, so that every
// matching entry is new.
type journalState struct {
	after    string
	fromHead bool
}

// emitError carries emit's error through follow, to tell it from
// journalctl's.
type emitError struct{ err error }

func (e emitError) Error() string { return e.err.Error() }

// follow runs journalctl --follow from st on, handing on messages and
// moving st past each entry read, until journalctl exits, ctx ends or
// emit fails. read says whether an entry was.
func (j *Journal) follow(ctx context.Context, st *journalState, emit func(msg, cursor string) error) (read bool, err error) {
	if st.after == "" && !st.fromHead {
		// Where the end is: the last matching entry now.
		last, err := j.lastCursor(ctx)
		if err != nil {
			return false, err
		}
		st.after, st.fromHead = last, last == ""
	}
	args := []string{"--follow"}
	if st.after != "" {
		args = append(args, "--after-cursor="+st.after)
	} else {
		args = append(args, "--lines=all") // --follow alone would show the last 10
	}
	j.logger().Info("journal: following", "journalctl", j.path(), "after", st.after, "matches", j.Matches)
	err = j.journalctl(ctx, args, func(e journalEntry) error {
		read = true
		for _, m := range e.messages {
			if err := emit(m, e.cursor); err != nil {
				return emitError{err}
			}
		}
		st.after = e.cursor
		return nil
	})
	if err == nil {
		err = errors.New("journalctl exited")
	}
	return read, err
}

// lastCursor returns the cursor of the last matching entry, or "" when
// there is none.
func (j *Journal) lastCursor(ctx context.Context) (string, error) {
	var last string
	err := j.journalctl(ctx, []string{"--lines=1"}, func(e journalEntry) error {
		last = e.cursor
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("finding the journal's end: %w", err)
	}
	return last, nil
}

// journalctl runs journalctl with args (and the source, the output format
// and the matches), handing each entry it writes to fn, until it exits
// (nil if with status 0), fn fails (fn's error), or ctx ends (ctx's
// error). It stops journalctl and waits for it before it returns.
func (j *Journal) journalctl(ctx context.Context, args []string, fn func(journalEntry) error) error {
	args = append(args, "--output=json", "--output-fields=MESSAGE", "--no-pager")
	for _, f := range j.Files {
		args = append(args, "--file="+f)
	}
	if j.Directory != "" {
		args = append(args, "--directory="+j.Directory)
	}
	// After "--", a match that begins with "-" cannot pass for an option.
	args = append(append(args, "--"), j.Matches...)

	pctx, stop := context.WithCancel(ctx)
	defer stop()
	cmd := exec.CommandContext(pctx, j.path(), args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = journalStopWait
	stderr := &lastBytes{n: journalStderr}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("guard: journal: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("guard: journal: starting %s: %w", j.path(), err)
	}
	rerr := j.entries(out, fn)
	if rerr != nil || ctx.Err() != nil {
		stop() // journalctl may still be running: stop it
	}
	werr := cmd.Wait()
	switch {
	case rerr != nil:
		return rerr
	case ctx.Err() != nil:
		return ctx.Err()
	case werr != nil:
		if msg := strings.TrimSpace(string(stderr.b)); msg != "" {
			return fmt.Errorf("guard: journal: %s: %w: %s", j.path(), werr, msg)
		}
		return fmt.Errorf("guard: journal: %s: %w", j.path(), werr)
	}
	return nil
}

// entries reads journalctl's JSON lines from r until its end, handing
// each entry to fn. A line longer than MaxLine, or one that is not an
// entry, is skipped with a warning.
func (j *Journal) entries(r io.Reader, fn func(journalEntry) error) error {
	limit := j.MaxLine
	if limit <= 0 {
		limit = defaultJournalMaxLine
	}
	br := bufio.NewReaderSize(r, limit)
	log := j.logger()
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			skipped := len(line)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				skipped += len(line)
			}
			log.Warn("journal: skipping an entry longer than the limit", "bytes", skipped, "limit", limit)
			line = nil
		}
		if len(line) > 0 {
			e, perr := parseJournalEntry(line)
			if perr != nil {
				log.Warn("journal: skipping what journalctl wrote", "err", perr, "line", journalExcerpt(bytes.TrimRight(line, "\n"), 200))
			} else if ferr := fn(e); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("guard: journal: reading from journalctl: %w", err)
		}
	}
}

// journalEntry is what Run takes from one entry: its cursor, and its
// MESSAGE values (none, one, or, rarely, several).
type journalEntry struct {
	cursor   string
	messages []string
}

// parseJournalEntry reads one line of journalctl --output=json. A MESSAGE
// that cannot be read as a string or bytes counts as none, so that the
// entry's cursor still moves Run on.
func parseJournalEntry(line []byte) (journalEntry, error) {
	var raw struct {
		Cursor  string          `json:"__CURSOR"`
		Message json.RawMessage `json:"MESSAGE"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return journalEntry{}, fmt.Errorf("not a journal entry: %w", err)
	}
	if raw.Cursor == "" {
		return journalEntry{}, errors.New("a journal entry without __CURSOR")
	}
	e := journalEntry{cursor: raw.Cursor}
	if len(raw.Message) == 0 {
		return e, nil
	}
	// A field is a string, an array of bytes (not valid UTF-8, or not
	// printable), or null (too long); a field an entry has several times
	// is an array of those.
	if msg, ok := journalValue(raw.Message); ok {
		if msg != nil {
			e.messages = []string{*msg}
		}
		return e, nil
	}
	var values []json.RawMessage
	if err := json.Unmarshal(raw.Message, &values); err != nil {
		return e, nil
	}
	for _, v := range values {
		if msg, ok := journalValue(v); ok && msg != nil {
			e.messages = append(e.messages, *msg)
		}
	}
	return e, nil
}

// journalValue reads one value of a field: a string, an array of bytes,
// or null (nil). ok is false for anything else.
func journalValue(v json.RawMessage) (s *string, ok bool) {
	var str *string
	if err := json.Unmarshal(v, &str); err == nil {
		return str, true
	}
	var ints []int
	if err := json.Unmarshal(v, &ints); err != nil {
		return nil, false
	}
	b := make([]byte, len(ints))
	for i, n := range ints {
		if n < 0 || n > 255 {
			return nil, false
		}
		b[i] = byte(n)
	}
	msg := string(b)
	return &msg, true
}

// checkJournalMatch accepts what Journal.Matches may hold: "+", or
// FIELD=VALUE with a field name as journald allows it.
func checkJournalMatch(m string) error {
	if m == "+" {
		return nil
	}
	field, _, ok := strings.Cut(m, "=")
	if !ok {
		return fmt.Errorf("%q is not FIELD=VALUE (like SYSLOG_IDENTIFIER=sshd) or \"+\"", m)
	}
	if field == "" || len(field) > 64 || (field[0] >= '0' && field[0] <= '9') {
		return fmt.Errorf("%q: %q is not a journal field name", m, field)
	}
	for _, c := range field {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("%q: %q is not a journal field name (upper-case letters, digits and _)", m, field)
		}
	}
	return nil
}

// checkJournalCursor accepts a cursor that journalctl can seek to, as
// sd_journal_seek_cursor reads it: ";"-separated k=v items, of which
// s= and i=, or b= and m=, or t= place the entry.
func checkJournalCursor(c string) error {
	have := map[byte]bool{}
	for item := range strings.SplitSeq(c, ";") {
		if len(item) < 2 || item[1] != '=' {
			return fmt.Errorf("%q is not k=v", item)
		}
		k, v := item[0], item[2:]
		switch k {
		case 's', 'b':
			if len(v) != 32 || !isHexDigits(v) {
				return fmt.Errorf("%c=: %q is not a 128-bit ID", k, v)
			}
		case 'i', 'm', 't', 'x':
			if _, err := strconv.ParseUint(v, 16, 64); err != nil {
				return fmt.Errorf("%c=: %q is not a hexadecimal number", k, v)
			}
		}
		have[k] = true
	}
	if !(have['s'] && have['i'] || have['b'] && have['m'] || have['t']) {
		return errors.New("it places no entry (it needs s= and i=, b= and m=, or t=)")
	}
	return nil
}

func isHexDigits(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (j *Journal) path() string {
	if j.Path == "" {
		return "journalctl"
	}
	return j.Path
}

func (j *Journal) logger() *slog.Logger {
	if j.Logger == nil {
		return slog.Default()
	}
	return j.Logger
}

// lastBytes keeps the last n bytes written to it: what journalctl said
// last before it exited.
type lastBytes struct {
	n int
	b []byte
}

func (l *lastBytes) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > l.n {
		p = p[len(p)-l.n:]
	}
	l.b = append(l.b, p...)
	if len(l.b) > l.n {
		l.b = append(l.b[:0], l.b[len(l.b)-l.n:]...)
	}
	return n, nil
}

func journalExcerpt(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
